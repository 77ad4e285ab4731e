// SLOs: each objective's SLI, error budget and burn rates; the selected
// one (`?slo=<name>`, so it is a link) with its budget burn-down chart.
import { useMemo } from 'preact/hooks';
import { get, type BurndownPoint, type SloEntry } from '../api';
import { TimeChart } from '../components/Chart';
import { Empty, ErrorBox, Status } from '../components/ui';
import { useFetch, useTime } from '../hooks';
import { href, useRoute } from '../route';
import { fmtDateTime, fmtNum, parseDuration } from '../time';

/** A ratio as a percentage with enough digits to tell 99.9 % from 99.95 %. */
const pct = (r: number | null | undefined, digits = 2) =>
  r === null || r === undefined || !Number.isFinite(r) ? '–' : `${(r * 100).toFixed(digits)}%`;
const pctOf = (p: number | null) => (p !== null && Number.isFinite(p) ? `${p.toFixed(1)}%` : '–');
const burn = (b: number | undefined) => (b === undefined || !Number.isFinite(b) ? '–' : `${fmtNum(b)}×`);

function describeIndicator(e: SloEntry): string {
  const i = e.slo.indicator;
  if (i.spans) {
    const what = i.spans.operation ? `${i.spans.service} ${i.spans.operation}` : `${i.spans.service} (entry spans)`;
    return i.spans.latency_threshold_ms !== undefined ? `${what} ≤ ${i.spans.latency_threshold_ms} ms` : `${what} without errors`;
  }
  if (i.promql) return `PromQL: ${i.promql.good} / ${i.promql.total}`;
  return '?';
}

export function SlosPage() {
  const { tick } = useTime();
  const route = useRoute();
  const selected = route.params.get('slo') ?? '';
  const f = useFetch((s) => get<{ slos: SloEntry[] }>('/api/v1/slos', s), [tick]);
  const entry = f.data?.slos.find((e) => e.slo.name === selected);
  return (
    <div class="page">
      <h1>SLOs</h1>
      <section class="panel">
        <Status
          f={f}
          what="the SLOs"
          isEmpty={(d) => d.slos.length === 0}
          empty={
            <>
              No SLOs yet — define one with <code>PUT /api/v1/slos/&lt;name&gt;</code> (a target, a window and a PromQL or
              span indicator; see docs/alerting.md).
            </>
          }
        >
          {(d) => <SloTable slos={d.slos} selected={selected} />}
        </Status>
      </section>
      {selected && f.data && !entry && (
        <Empty>
          There is no SLO named <code>{selected}</code>.
        </Empty>
      )}
      {entry && <SloDetail entry={entry} />}
    </div>
  );
}

function SloTable({ slos, selected }: { slos: SloEntry[]; selected: string }) {
  return (
    <table class="grid" data-testid="slos-table">
      <thead>
        <tr>
          <th>SLO</th>
          <th>Indicator</th>
          <th class="num">Target</th>
          <th class="num">Window</th>
          <th class="num">SLI</th>
          <th class="num">Budget remaining</th>
          <th class="num">Remaining %</th>
          <th class="num">Burn rate 1h</th>
          <th class="num">Burn rate (window)</th>
        </tr>
      </thead>
      <tbody>
        {slos.map((e) => {
          const r = e.report;
          const b = r?.error_budget;
          const over = b ? b.remaining < 0 : false;
          return (
            <tr key={e.slo.name} class={e.slo.name === selected ? 'selected' : ''} data-testid="slo-row">
              <td>
                <a href={href('/slos', { slo: e.slo.name })} data-testid="slo-link">
                  {e.slo.name}
                </a>
                {e.slo.description && <div class="muted small">{e.slo.description}</div>}
              </td>
              <td class="small">{describeIndicator(e)}</td>
              <td class="num">{pct(e.slo.target, 3).replace(/\.?0+%$/, '%')}</td>
              <td class="num">{e.slo.window}</td>
              {r ? (
                <>
                  <td class={`num ${r.sli !== null && r.sli < r.target ? 'bad' : ''}`}>{r.sli === null ? 'no events' : pct(r.sli)}</td>
                  <td class={`num ${over ? 'bad' : ''}`}>
                    {fmtNum(b!.remaining)} <span class="muted small">of {fmtNum(b!.total)}</span>
                  </td>
                  <td class={`num ${over ? 'bad' : ''}`}>{pctOf(b!.remaining_percent)}</td>
                  <td class={`num ${(r.burn_rates['1h'] ?? 0) > 1 ? 'bad' : ''}`}>{burn(r.burn_rates['1h'])}</td>
                  <td class={`num ${(r.burn_rates[r.window] ?? 0) > 1 ? 'bad' : ''}`}>{burn(r.burn_rates[r.window])}</td>
                </>
              ) : (
                <td colSpan={5} class="field-error">
                  {e.error ?? 'no report'}
                </td>
              )}
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function SloDetail({ entry }: { entry: SloEntry }) {
  const { tick } = useTime();
  const name = entry.slo.name;
  const f = useFetch(
    (s) => get<{ points: BurndownPoint[] }>(`/api/v1/slos/${encodeURIComponent(name)}/burndown?points=30`, s),
    [name, tick],
    name,
  );
  const r = entry.report;
  const b = r?.error_budget;
  // Shortest window first (the server sorts the names as text).
  const rates = Object.entries(r?.burn_rates ?? {}).sort(([a], [b]) => (parseDuration(a) ?? 0) - (parseDuration(b) ?? 0));
  return (
    <>
      <h2 data-testid="slo-title">{name}</h2>
      {entry.error && <ErrorBox error={new Error(entry.error)} title="Could not compute the report" />}
      {r && b && (
        <>
          <div class="stats" data-testid="slo-stats">
            <div class={`stat ${r.sli !== null && r.sli < r.target ? 'bad' : ''}`}>
              <span>SLI ({r.window})</span>
              <b>{r.sli === null ? 'no events' : pct(r.sli)}</b>
            </div>
            <div class="stat">
              <span>Target</span>
              <b>{pct(r.target, 3).replace(/\.?0+%$/, '%')}</b>
            </div>
            <div class="stat">
              <span>Events (good / total)</span>
              <b>
                {fmtNum(r.events.good)} / {fmtNum(r.events.total)}
              </b>
            </div>
            <div class={`stat ${b.remaining < 0 ? 'bad' : ''}`}>
              <span>Budget remaining</span>
              <b>
                {fmtNum(b.remaining)} ({pctOf(b.remaining_percent)})
              </b>
            </div>
            <div class="stat">
              <span>Budget consumed</span>
              <b>
                {fmtNum(b.consumed)} of {fmtNum(b.total)}
              </b>
            </div>
          </div>
          <section class="panel">
            <h3>Burn rates</h3>
            <table class="grid" data-testid="slo-burn-rates">
              <thead>
                <tr>
                  {rates.map(([w]) => (
                    <th key={w}>{w}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                <tr>
                  {rates.map(([w, v]) => (
                    <td class={v > 1 ? 'bad' : ''} key={w}>
                      {burn(v)}
                    </td>
                  ))}
                </tr>
              </tbody>
            </table>
            <div class="muted small">
              1× spends the budget exactly over the SLO window. Report at {fmtDateTime(r.t_ms)}.
              {entry.slo.alerts ? ' Burn-rate alerts are generated (group slo:' + name + ').' : ' No burn-rate alerts.'}
            </div>
          </section>
        </>
      )}
      <section class="panel">
        <h3>Error budget remaining over the window</h3>
        <Status f={f} what="the burn-down" isEmpty={(d) => d.points.length === 0} empty="No points.">
          {(d) => <Burndown points={d.points} />}
        </Status>
      </section>
    </>
  );
}

function Burndown({ points }: { points: BurndownPoint[] }) {
  const x = useMemo(() => points.map((p) => Date.parse(p.time) / 1000), [points]);
  const series = useMemo(() => [{ label: 'budget remaining %', values: points.map((p) => p.remaining_percent) }], [points]);
  return <TimeChart x={x} series={series} height={240} yFormat={(v) => `${fmtNum(v)}%`} testId="slo-burndown" />;
}
