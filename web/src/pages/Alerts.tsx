// Alerting: rule states, the pending and firing alerts, silences (create and
// expire), failing notification channels and the transition history.
import { useState } from 'preact/hooks';
import {
  createSilence,
  expireSilence,
  get,
  type Channel,
  type HistoryEntry,
  type Labels,
  type PromAlert,
  type PromRuleGroup,
  type Silence,
} from '../api';
import { ErrorBox, Status } from '../components/ui';
import { useFetch, useTime } from '../hooks';
import { fmtDateTime, fmtNum, toLocalInput } from '../time';

const RULES_HINT = (
  <>
    No rules yet — import a rule file (Prometheus format, YAML or JSON) with <code>POST /api/v1/alerting/rules</code>, or
    define an SLO to get burn-rate alerts.
  </>
);

function LabelChips({ labels, skip = [] }: { labels?: Labels; skip?: string[] }) {
  const e = Object.entries(labels ?? {}).filter(([k]) => !skip.includes(k));
  if (!e.length) return <span class="muted">–</span>;
  return (
    <>
      {e.map(([k, v]) => (
        <span class="chip" key={k}>
          {k}={v}
        </span>
      ))}
    </>
  );
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`state state-${state}`}>{state}</span>;
}

const ms = (t: string) => Date.parse(t);

export function AlertsPage() {
  const { tick } = useTime();
  // Bumped after a silence is created or expired.
  const [changed, setChanged] = useState(0);
  const rules = useFetch((s) => get<{ data: { groups: PromRuleGroup[] } }>('/api/v1/rules', s), [tick]);
  const alerts = useFetch((s) => get<{ data: { alerts: PromAlert[] } }>('/api/v1/alerts', s), [tick]);
  const silences = useFetch((s) => get<{ silences: Silence[] }>('/api/v1/alerting/silences', s), [tick, changed]);
  const history = useFetch((s) => get<{ history: HistoryEntry[] }>('/api/v1/alerting/history?limit=100', s), [tick, changed]);
  const channels = useFetch((s) => get<{ channels: Channel[] }>('/api/v1/alerting/channels', s), [tick]);
  // "Silence…" on an alert refills the form (a new key remounts it).
  const [prefill, setPrefill] = useState({ text: '', n: 0 });

  const all = alerts.data?.data.alerts ?? [];
  const firing = all.filter((a) => a.state === 'firing').length;
  const pending = all.filter((a) => a.state === 'pending').length;
  const ruleCount = rules.data?.data.groups.reduce((n, g) => n + g.rules.length, 0);
  const activeSilences = silences.data?.silences.filter((s) => s.status.state === 'active').length;
  const failing = channels.data?.channels.filter((c) => c.status.failing) ?? [];

  return (
    <div class="page">
      <h1>Alerts</h1>
      <div class="stats" data-testid="alert-stats">
        <div class={`stat ${firing ? 'bad' : ''}`}>
          <span>Firing</span>
          <b>{alerts.data ? firing : '–'}</b>
        </div>
        <div class="stat">
          <span>Pending</span>
          <b>{alerts.data ? pending : '–'}</b>
        </div>
        <div class="stat">
          <span>Rules</span>
          <b>{ruleCount ?? '–'}</b>
        </div>
        <div class="stat">
          <span>Active silences</span>
          <b>{activeSilences ?? '–'}</b>
        </div>
      </div>
      {failing.length > 0 && (
        <div class="error-box" data-testid="failing-channels">
          <strong>Failing notification channels</strong>
          {failing.map((c) => (
            <span key={c.name}>
              <b>{c.name}</b> ({c.type}): {c.status.last_error ?? 'delivery failed'}
              {c.status.last_error_ms ? ` at ${fmtDateTime(c.status.last_error_ms)}` : ''} —{' '}
              {c.status.consecutive_failures} failed attempt{c.status.consecutive_failures === 1 ? '' : 's'} in a row
            </span>
          ))}
        </div>
      )}
      {channels.error && channels.error.message && <ErrorBox error={channels.error} title="Could not load the channels" />}

      <h2>Firing and pending alerts</h2>
      <section class="panel">
        <Status
          f={alerts}
          what="the alerts"
          isEmpty={(d) => d.data.alerts.length === 0}
          empty="No alert is pending or firing."
        >
          {(d) => (
            <AlertTable
              alerts={d.data.alerts}
              onSilence={(text) => {
                setPrefill((p) => ({ text, n: p.n + 1 }));
                document.getElementById('silences')?.scrollIntoView();
              }}
            />
          )}
        </Status>
      </section>

      <h2>Rules</h2>
      <section class="panel">
        <Status
          f={rules}
          what="the rules"
          isEmpty={(d) => d.data.groups.every((g) => g.rules.length === 0)}
          empty={RULES_HINT}
        >
          {(d) => <RuleTable groups={d.data.groups} />}
        </Status>
      </section>

      <h2 id="silences">Silences</h2>
      <section class="panel">
        <SilenceForm key={prefill.n} initial={prefill.text} onCreated={() => setChanged((x) => x + 1)} />
      </section>
      <section class="panel">
        <Status
          f={silences}
          what="the silences"
          isEmpty={(d) => d.silences.length === 0}
          empty="No silences. A silence mutes the notifications of the alerts its matchers select for a while."
        >
          {(d) => <SilenceTable silences={d.silences} onExpired={() => setChanged((x) => x + 1)} />}
        </Status>
      </section>

      <h2>History</h2>
      <section class="panel">
        <Status
          f={history}
          what="the history"
          isEmpty={(d) => d.history.length === 0}
          empty="No transitions yet: every change of an alert's state (inactive, pending, firing, resolved) is listed here."
        >
          {(d) => <HistoryTable entries={d.history} />}
        </Status>
      </section>
    </div>
  );
}

function AlertTable({ alerts, onSilence }: { alerts: PromAlert[]; onSilence: (matchers: string) => void }) {
  const sorted = [...alerts].sort(
    (a, b) => (a.state === b.state ? 0 : a.state === 'firing' ? -1 : 1) || ms(a.activeAt) - ms(b.activeAt),
  );
  return (
    <table class="grid" data-testid="alerts-table">
      <thead>
        <tr>
          <th>Alert</th>
          <th>State</th>
          <th>Labels</th>
          <th>Summary</th>
          <th>Active since</th>
          <th class="num">Value</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {sorted.map((a, i) => (
          <tr key={i}>
            <td>
              <b>{a.labels.alertname}</b>
            </td>
            <td>
              <StateBadge state={a.state} />
            </td>
            <td>
              <LabelChips labels={a.labels} skip={['alertname']} />
            </td>
            <td class="small">{a.annotations?.summary ?? a.annotations?.description ?? ''}</td>
            <td class="small">{fmtDateTime(ms(a.activeAt))}</td>
            <td class="num">{fmtNum(Number(a.value))}</td>
            <td>
              <button
                class="btn small"
                onClick={() =>
                  onSilence(
                    Object.entries(a.labels)
                      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
                      .join(', '),
                  )
                }
              >
                Silence…
              </button>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function RuleTable({ groups }: { groups: PromRuleGroup[] }) {
  return (
    <table class="grid" data-testid="rules-table">
      <thead>
        <tr>
          <th>Rule</th>
          <th>Group</th>
          <th>State</th>
          <th>Query</th>
          <th>Labels</th>
          <th class="num">Alerts</th>
          <th>Last evaluation</th>
        </tr>
      </thead>
      <tbody>
        {groups.flatMap((g) =>
          g.rules.map((r, i) => (
            <tr key={`${g.name}/${i}`} data-testid="rule-row">
              <td>
                <b>{r.name}</b>
                {r.type === 'recording' && <span class="badge">recording</span>}
                {r.health === 'err' && <span class="badge err">error</span>}
                {r.lastError && <div class="field-error">{r.lastError}</div>}
              </td>
              <td class="small">
                {g.name}
                {g.file === 'slo' && <span class="badge">SLO</span>}
                <div class="muted">every {fmtSecs(g.interval)}</div>
              </td>
              <td>{r.type === 'alerting' ? <StateBadge state={r.state ?? 'inactive'} /> : <span class="muted">–</span>}</td>
              <td>
                <code class="query">{r.query}</code>
                {r.type === 'alerting' && r.duration ? <div class="muted small">for {fmtSecs(r.duration)}</div> : null}
              </td>
              <td>
                <LabelChips labels={r.labels} />
              </td>
              <td class="num">{r.type === 'alerting' ? (r.alerts?.length ?? 0) : ''}</td>
              <td class="small muted">{r.lastEvaluation.startsWith('0001') ? 'not yet' : fmtDateTime(ms(r.lastEvaluation))}</td>
            </tr>
          )),
        )}
      </tbody>
    </table>
  );
}

function fmtSecs(s: number): string {
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${+s.toFixed(2)}s`;
  if (s < 3600) return `${+(s / 60).toFixed(1)}m`;
  if (s < 86400) return `${+(s / 3600).toFixed(1)}h`;
  return `${+(s / 86400).toFixed(1)}d`;
}

/** Splits `a="x", b=~"y,z"` at the commas and newlines outside quotes. */
export function splitMatchers(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && quoted) {
      cur += c + (s[++i] ?? '');
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (!quoted && (c === ',' || c === '\n')) {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function SilenceForm({ initial, onCreated }: { initial: string; onCreated: () => void }) {
  const [matchers, setMatchers] = useState(initial);
  const [duration, setDuration] = useState('2h');
  const [endsAt, setEndsAt] = useState('');
  const [createdBy, setCreatedBy] = useState(() => localStorage.getItem('tern.silence.creator') ?? '');
  const [comment, setComment] = useState('');
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState('');

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setCreated('');
    const list = splitMatchers(matchers);
    if (!list.length) return setError(new Error('Give at least one matcher, such as alertname="HighErrorRate".'));
    if (!endsAt && !duration.trim()) return setError(new Error('Give a duration (such as 30m, 2h, 1d) or an end time.'));
    setBusy(true);
    try {
      const r = await createSilence({
        matchers: list,
        ...(endsAt ? { endsAt: new Date(endsAt).toISOString() } : { duration: duration.trim() }),
        createdBy: createdBy.trim(),
        comment,
      });
      try {
        localStorage.setItem('tern.silence.creator', createdBy.trim());
      } catch {
        /* private mode */
      }
      setCreated(r.silenceID);
      setMatchers('');
      setComment('');
      setEndsAt('');
      onCreated();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="search-form" onSubmit={submit} data-testid="silence-form">
      <label class="wide">
        Matchers
        <input
          name="matchers"
          value={matchers}
          onInput={(e) => setMatchers(e.currentTarget.value)}
          placeholder='alertname="HighErrorRate", job=~"api|web"'
          required
        />
      </label>
      <label>
        Duration
        <input name="duration" value={duration} onInput={(e) => setDuration(e.currentTarget.value)} size={6} disabled={!!endsAt} />
      </label>
      <label>
        or ends at
        <input
          name="endsAt"
          type="datetime-local"
          value={endsAt}
          min={toLocalInput(Date.now())}
          onInput={(e) => setEndsAt(e.currentTarget.value)}
        />
      </label>
      <label>
        Created by
        <input name="createdBy" value={createdBy} onInput={(e) => setCreatedBy(e.currentTarget.value)} required size={12} />
      </label>
      <label class="wide">
        Comment
        <input name="comment" value={comment} onInput={(e) => setComment(e.currentTarget.value)} placeholder="why" />
      </label>
      <button class="btn primary" type="submit" disabled={busy} data-testid="silence-create">
        {busy ? 'Creating…' : 'Create silence'}
      </button>
      {created && (
        <span class="muted small" data-testid="silence-created">
          Created silence {created}.
        </span>
      )}
      {error && (
        <div style={{ width: '100%' }}>
          <ErrorBox error={error} title="Could not create the silence" />
        </div>
      )}
    </form>
  );
}

function SilenceTable({ silences, onExpired }: { silences: Silence[]; onExpired: () => void }) {
  const [error, setError] = useState<Error | null>(null);
  const order = { active: 0, pending: 1, expired: 2 } as Record<string, number>;
  const sorted = [...silences].sort((a, b) => order[a.status.state] - order[b.status.state] || ms(b.startsAt) - ms(a.startsAt));
  const expire = async (id: string) => {
    setError(null);
    try {
      await expireSilence(id);
      onExpired();
    } catch (e) {
      setError(e as Error);
    }
  };
  return (
    <>
      {error && <ErrorBox error={error} title="Could not expire the silence" />}
      <table class="grid" data-testid="silences-table">
        <thead>
          <tr>
            <th>Matchers</th>
            <th>State</th>
            <th>Starts</th>
            <th>Ends</th>
            <th>Created by</th>
            <th>Comment</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {sorted.map((s) => (
            <tr key={s.id} data-testid="silence-row" data-state={s.status.state}>
              <td>
                {s.matchers.map((m) => (
                  <code class="chip" key={m}>
                    {m}
                  </code>
                ))}
              </td>
              <td>
                <StateBadge state={s.status.state} />
              </td>
              <td class="small">{fmtDateTime(ms(s.startsAt))}</td>
              <td class="small">{fmtDateTime(ms(s.endsAt))}</td>
              <td>{s.createdBy}</td>
              <td class="small">{s.comment}</td>
              <td>
                {s.status.state !== 'expired' && (
                  <button class="btn small" onClick={() => expire(s.id)} data-testid="silence-expire">
                    Expire
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function HistoryTable({ entries }: { entries: HistoryEntry[] }) {
  return (
    <div class="table-scroll">
      <table class="grid" data-testid="history-table">
        <thead>
          <tr>
            <th>Time</th>
            <th>Rule</th>
            <th>Transition</th>
            <th class="num">Value</th>
            <th>Labels</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((h, i) => (
            <tr key={i} data-testid="history-row">
              <td class="small">{fmtDateTime(ms(h.time))}</td>
              <td>
                <code>{h.rule}</code>
              </td>
              <td>
                <StateBadge state={h.from} /> → <StateBadge state={h.to} />
              </td>
              <td class="num">{fmtNum(h.value)}</td>
              <td>
                <LabelChips labels={h.labels} skip={['alertname']} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
