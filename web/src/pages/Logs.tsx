import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, get, ns, nsToMs, qs, type LogBucket, type LogPage, type LogRecord } from '../api';
import { Attributes, colorFor, Empty, ErrorBox, Loading } from '../components/ui';
import { useFetch, useTime } from '../hooks';
import { href, setParams, useRoute } from '../route';
import { fmtDateTime, fmtNum, fmtTime, niceStep } from '../time';

const SEVERITIES = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'unspecified'];
const SEV_COLOR: Record<string, string> = {
  fatal: '#8b0000',
  error: '#e15759',
  warn: '#f28e2b',
  info: '#4e79a7',
  debug: '#76b7b2',
  trace: '#bab0ac',
  unspecified: '#9c9c9c',
};
const TAIL_MAX = 500;

export function LogsPage() {
  const { params } = useRoute();
  const { range, resolved, tick } = useTime();
  const q = params.get('q') ?? '';
  const tail = params.get('tail') === '1';
  const [text, setText] = useState(q);
  useEffect(() => setText(q), [q]);
  const [more, setMore] = useState<{ records: LogRecord[]; cursor: string | null } | null>(null);
  const [moreErr, setMoreErr] = useState<Error | null>(null);
  const step = niceStep(resolved.end - resolved.start, 80);
  const page = useFetch(
    tail
      ? null
      : (s) =>
          get<LogPage>(`/api/v1/logs/search${qs({ q, start: ns(resolved.start), end: ns(resolved.end), limit: 100, step: `${step / 1000}s` })}`, s),
    [q, tail, resolved.start, resolved.end, tick],
    `${q}|${range.from}|${range.to}`,
  );
  useEffect(() => {
    setMore(null);
    setMoreErr(null);
  }, [page.data]);

  const submit = (e: Event) => {
    e.preventDefault();
    setParams({ q: text.trim() || undefined });
  };
  const loadMore = async (cursor: string) => {
    try {
      const p = await get<LogPage>(`/api/v1/logs/search${qs({ q, start: ns(resolved.start), end: ns(resolved.end), limit: 100, cursor })}`);
      setMore((m) => ({ records: [...(m?.records ?? []), ...p.records], cursor: p.next_cursor }));
    } catch (e) {
      setMoreErr(e as Error);
    }
  };
  const records = page.data ? [...page.data.records, ...(more?.records ?? [])] : [];
  const cursor = more ? more.cursor : page.data?.next_cursor;

  return (
    <div class="page">
      <h1>Logs</h1>
      <form class="panel query-form" onSubmit={submit}>
        <input
          class="query-input mono"
          data-testid="log-query"
          value={text}
          onInput={(e) => setText((e.target as HTMLInputElement).value)}
          placeholder='severity:error AND "connection reset" -service:cart'
          aria-label="Log query"
        />
        <button class="btn primary" type="submit" data-testid="log-search">
          Search
        </button>
        <button
          class={`btn ${tail ? 'active' : ''}`}
          type="button"
          data-testid="log-tail"
          onClick={() => setParams({ q: text.trim() || undefined, tail: tail ? undefined : '1' })}
        >
          {tail ? '■ Stop live tail' : '▶ Live tail'}
        </button>
        <details class="syntax">
          <summary>Syntax</summary>
          <div class="small">
            <code>timeout</code> word · <code>"connection reset"</code> phrase · <code>severity:error</code> ·{' '}
            <code>service:checkout</code> · <code>trace_id:&lt;hex&gt;</code> · <code>attributes.http.status_code:500</code> ·{' '}
            <code>resource.host.name:web-1</code> · <code>severity_number:&gt;=17</code> · <code>a AND b</code>, <code>a OR b</code>,{' '}
            <code>NOT a</code>, <code>-a</code>, <code>( … )</code> · <code>*</code> everything
          </div>
        </details>
      </form>
      {tail ? (
        <Tail q={q} />
      ) : page.error ? (
        <ErrorBox error={page.error} title={page.error instanceof ApiError && page.error.status === 400 ? 'Invalid query' : 'Could not search the logs'} />
      ) : !page.data ? (
        <Loading on={page.loading} label="Searching…" />
      ) : (
        <>
          <Loading on={page.loading} label="Refreshing…" />
          <section class="panel">
            <div class="panel-head">
              <span data-testid="log-total">
                <b>{fmtNum(page.data.total)}</b> matching records
              </span>
              <span class="legend">
                {SEVERITIES.filter((s) => page.data!.histogram?.buckets.some((b) => b.by_severity[s])).map((s) => (
                  <span>
                    <span class="dot" style={{ background: SEV_COLOR[s] }} /> {s}
                  </span>
                ))}
              </span>
            </div>
            {page.data.histogram && <Histogram buckets={page.data.histogram.buckets} stepMs={nsToMs(page.data.histogram.step_ns)} />}
          </section>
          {records.length === 0 ? (
            <Empty>No logs match in this time range. Check the query or widen the time range.</Empty>
          ) : (
            <section class="panel">
              <LogList records={records} />
              {moreErr && <ErrorBox error={moreErr} title="Could not load more" />}
              {cursor && (
                <button class="btn" onClick={() => loadMore(cursor)}>
                  Load more ({fmtNum(page.data.total - records.length)} left)
                </button>
              )}
            </section>
          )}
        </>
      )}
    </div>
  );
}

/** Counts over time stacked by severity; dragging is not needed: a click zooms to a bucket. */
function Histogram({ buckets, stepMs }: { buckets: LogBucket[]; stepMs: number }) {
  const W = 1000;
  const H = 120;
  const max = Math.max(...buckets.map((b) => b.total), 1);
  const bw = W / Math.max(buckets.length, 1);
  return (
    <svg class="histogram" viewBox={`0 0 ${W} ${H + 16}`} preserveAspectRatio="none" data-testid="log-histogram" role="img" aria-label="log count over time by severity">
      {buckets.map((b, i) => {
        let y = H;
        const t = nsToMs(b.start_ns);
        return (
          <g
            class="bar"
            onClick={() => b.total && setParams({ from: String(Math.floor(t)), to: String(Math.ceil(t + stepMs)) })}
          >
            <title>
              {fmtDateTime(t)}: {b.total} records{' '}
              {Object.entries(b.by_severity)
                .map(([k, v]) => `${k} ${v}`)
                .join(', ')}
            </title>
            <rect x={i * bw} y={0} width={bw} height={H} fill="transparent" />
            {[...SEVERITIES].reverse().map((s) => {
              const c = b.by_severity[s];
              if (!c) return null;
              const h = (c / max) * (H - 4);
              y -= h;
              return <rect x={i * bw + bw * 0.1} y={y} width={bw * 0.8} height={h} fill={SEV_COLOR[s]} />;
            })}
          </g>
        );
      })}
      {[0, Math.floor(buckets.length / 2), buckets.length - 1].filter((i) => buckets[i]).map((i) => (
        <text x={Math.min(i * bw + 2, W - 60)} y={H + 13} class="axis-label">
          {fmtDateTime(nsToMs(buckets[i].start_ns)).slice(5, 16)}
        </text>
      ))}
    </svg>
  );
}

function bodyText(b: unknown): string {
  return typeof b === 'string' ? b : JSON.stringify(b);
}

function LogList({ records }: { records: LogRecord[] }) {
  const [open, setOpen] = useState<Set<string>>(new Set());
  const toggle = (id: string) => {
    const s = new Set(open);
    s.has(id) ? s.delete(id) : s.add(id);
    setOpen(s);
  };
  return (
    <div class="log-list" data-testid="log-list">
      {records.map((r) => (
        <div class={`log-row sev-${r.severity}`} key={r.id} data-testid="log-row">
          <div class="log-line" onClick={() => toggle(r.id)}>
            <span class="mono small muted">{fmtDateTime(nsToMs(r.time_ns)).slice(5)}.{fmtTime(nsToMs(r.time_ns)).slice(9)}</span>
            <span class="sev" style={{ color: SEV_COLOR[r.severity] ?? SEV_COLOR.unspecified }}>
              {r.severity_text || r.severity}
            </span>
            <span class="chip" style={{ borderColor: colorFor(r.service) }}>
              {r.service}
            </span>
            <span class="body">{bodyText(r.body)}</span>
            {r.trace_id && (
              <a class="btn small" href={href(`/traces/${r.trace_id}`)} onClick={(e) => e.stopPropagation()} data-testid="log-trace-link">
                trace
              </a>
            )}
          </div>
          {open.has(r.id) && (
            <div class="log-details">
              <table class="kv">
                <tbody>
                  <tr>
                    <th>Time</th>
                    <td>{r.timestamp}</td>
                  </tr>
                  <tr>
                    <th>Severity</th>
                    <td>
                      {r.severity} ({r.severity_number}) {r.severity_text}
                    </td>
                  </tr>
                  {r.trace_id && (
                    <tr>
                      <th>Trace</th>
                      <td>
                        <a class="mono" href={href(`/traces/${r.trace_id}`)}>
                          {r.trace_id}
                        </a>
                        {r.span_id && <span class="mono muted"> span {r.span_id}</span>}
                      </td>
                    </tr>
                  )}
                  <tr>
                    <th>Scope</th>
                    <td>
                      {r.scope.name} {r.scope.version}
                    </td>
                  </tr>
                </tbody>
              </table>
              {typeof r.body !== 'string' && <pre>{JSON.stringify(r.body, null, 2)}</pre>}
              <h4>Attributes</h4>
              <Attributes attrs={r.attributes} />
              <h4>Resource</h4>
              <Attributes attrs={r.resource} />
            </div>
          )}
        </div>
      ))}
    </div>
  );
}

/** Live tail over server-sent events; newest first, at most TAIL_MAX kept. */
function Tail({ q }: { q: string }) {
  const [records, setRecords] = useState<LogRecord[]>([]);
  const [state, setState] = useState<'connecting' | 'open' | 'error'>('connecting');
  const [skipped, setSkipped] = useState(0);
  const paused = useRef(false);
  const [isPaused, setPaused] = useState(false);
  useEffect(() => {
    setRecords([]);
    setSkipped(0);
    setState('connecting');
    const es = new EventSource(`/api/v1/logs/tail${qs({ q })}`);
    let pending: LogRecord[] = [];
    const flush = setInterval(() => {
      if (!pending.length || paused.current) return;
      const batch = pending.reverse();
      pending = [];
      setRecords((r) => [...batch, ...r].slice(0, TAIL_MAX));
    }, 250);
    es.onopen = () => setState('open');
    es.onerror = () => setState('error');
    es.addEventListener('log', (e) => {
      pending.push(JSON.parse((e as MessageEvent).data));
      if (pending.length > TAIL_MAX) pending.splice(0, pending.length - TAIL_MAX);
    });
    es.addEventListener('lagged', (e) => setSkipped((s) => s + (JSON.parse((e as MessageEvent).data).skipped ?? 0)));
    return () => {
      clearInterval(flush);
      es.close();
    };
  }, [q]);
  return (
    <section class="panel" data-testid="tail">
      <div class="panel-head">
        <span>
          {state === 'open' ? <span class="live">● live</span> : state === 'connecting' ? 'connecting…' : <span class="bad">disconnected, retrying…</span>}{' '}
          {records.length} records (newest first, last {TAIL_MAX} kept)
          {skipped > 0 && <span class="warn-inline"> · {skipped} skipped: the browser fell behind</span>}
        </span>
        <button
          class="btn small"
          onClick={() => {
            paused.current = !paused.current;
            setPaused(paused.current);
          }}
        >
          {isPaused ? 'Resume' : 'Pause'}
        </button>
      </div>
      {records.length === 0 ? <Empty>Waiting for new records matching the query…</Empty> : <LogList records={records} />}
    </section>
  );
}
