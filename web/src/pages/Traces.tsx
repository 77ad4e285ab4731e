import { get, ns, nsToMs, qs, type TraceSummary } from '../api';
import { colorFor, Status } from '../components/ui';
import { useFetch, useTime } from '../hooks';
import { href, navigate, setParams, useRoute } from '../route';
import { fmtDateTime, fmtDuration } from '../time';

export function TracesPage() {
  const { params } = useRoute();
  const { resolved, tick } = useTime();
  const p = {
    service: params.get('service') ?? '',
    operation: params.get('operation') ?? '',
    attr: params.getAll('attr'),
    min_duration: params.get('min_duration') ?? '',
    max_duration: params.get('max_duration') ?? '',
    error: params.get('error') === 'true',
    limit: params.get('limit') ?? '50',
  };
  const services = useFetch((s) => get<{ services: string[] }>('/api/v1/services', s), [tick]);
  const ops = useFetch(
    p.service ? (s) => get<{ operations: { name: string; kind: string }[] }>(`/api/v1/services/${encodeURIComponent(p.service)}/operations`, s) : null,
    [p.service, tick],
  );
  const key = params.toString();
  const result = useFetch(
    (s) =>
      get<{ traces: TraceSummary[]; complete: boolean }>(
        `/api/v1/traces${qs({
          service: p.service,
          operation: p.operation,
          attr: p.attr,
          min_duration: p.min_duration,
          max_duration: p.max_duration,
          error: p.error ? 'true' : undefined,
          limit: p.limit,
          start: ns(resolved.start),
          end: ns(resolved.end),
        })}`,
        s,
      ),
    [key, resolved.start, resolved.end, tick],
    key,
  );

  const submit = (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.target as HTMLFormElement);
    const v = (k: string) => String(f.get(k) ?? '').trim() || undefined;
    setParams({
      service: v('service'),
      operation: v('operation'),
      attr: String(f.get('attr') ?? '').split(/\s+/).filter(Boolean),
      min_duration: v('min_duration'),
      max_duration: v('max_duration'),
      error: f.get('error') ? 'true' : undefined,
      limit: v('limit'),
    });
  };

  return (
    <div class="page">
      <h1>Traces</h1>
      <form key={key} class="panel search-form" onSubmit={submit} data-testid="trace-search">
        <label>
          Service
          <select name="service" value={p.service} onChange={(e) => setParams({ service: (e.target as HTMLSelectElement).value || undefined, operation: undefined })}>
            <option value="">All services</option>
            {services.data?.services.map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
        <label>
          Operation
          <select
            name="operation"
            value={p.operation}
            disabled={!p.service}
            onChange={(e) => setParams({ operation: (e.target as HTMLSelectElement).value || undefined })}
          >
            <option value="">All operations</option>
            {[...new Set(ops.data?.operations.map((o) => o.name))].map((o) => (
              <option value={o}>{o}</option>
            ))}
          </select>
        </label>
        <label class="wide">
          Attributes <span class="muted">(key=value, space separated)</span>
          <input name="attr" defaultValue={p.attr.join(' ')} placeholder="http.status_code=500 user.id=u1" />
        </label>
        <label>
          Min duration
          <input name="min_duration" defaultValue={p.min_duration} placeholder="100ms" size={8} />
        </label>
        <label>
          Max duration
          <input name="max_duration" defaultValue={p.max_duration} placeholder="2s" size={8} />
        </label>
        <label>
          Limit
          <input name="limit" defaultValue={p.limit} size={5} />
        </label>
        <label class="check">
          <input type="checkbox" name="error" defaultChecked={p.error} /> Errors only
        </label>
        <button class="btn primary" type="submit">
          Search
        </button>
      </form>
      {services.error && <div class="field-error">Could not load the services: {services.error.message}</div>}
      <Status
        f={result}
        what="the traces"
        isEmpty={(d) => d.traces.length === 0}
        empty="No traces match in this time range. Loosen the filters or widen the time range."
      >
        {(d) => (
          <>
            {!d.complete && <div class="warn">The search stopped at its deadline: the list may be incomplete.</div>}
            <section class="panel">
              <Scatter traces={d.traces} start={resolved.start} end={resolved.end} />
            </section>
            <section class="panel">
              <table class="grid" data-testid="trace-results">
                <thead>
                  <tr>
                    <th>Root</th>
                    <th>Trace</th>
                    <th>Start</th>
                    <th class="num">Duration</th>
                    <th class="num">Spans</th>
                    <th class="num">Errors</th>
                    <th>Services</th>
                  </tr>
                </thead>
                <tbody>
                  {d.traces.map((t) => (
                    <tr key={t.trace_id}>
                      <td>
                        <a href={href(`/traces/${t.trace_id}`)} data-testid="trace-link">
                          <b>{t.root_service}</b>: {t.root_name}
                        </a>
                        {!t.root_known && <span class="muted small"> (root not received)</span>}
                      </td>
                      <td class="mono small">{t.trace_id.slice(0, 12)}…</td>
                      <td>{fmtDateTime(nsToMs(t.start_time_unix_nano))}</td>
                      <td class="num">{fmtDuration(t.duration_ns / 1e6)}</td>
                      <td class="num">{t.span_count}</td>
                      <td class={`num ${t.error_count ? 'bad' : ''}`}>{t.error_count}</td>
                      <td>
                        {t.services.map((s) => (
                          <span class="chip" style={{ borderColor: colorFor(s) }}>
                            {s}
                          </span>
                        ))}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
          </>
        )}
      </Status>
    </div>
  );
}

/** Duration over start time, one dot per trace (red with errors); a click opens it. */
function Scatter({ traces, start, end }: { traces: TraceSummary[]; start: number; end: number }) {
  const W = 1000;
  const H = 180;
  const pad = { l: 60, r: 10, t: 10, b: 24 };
  const maxD = Math.max(...traces.map((t) => t.duration_ns / 1e6), 1);
  const x = (ms: number) => pad.l + ((ms - start) / Math.max(end - start, 1)) * (W - pad.l - pad.r);
  const y = (d: number) => H - pad.b - (d / maxD) * (H - pad.t - pad.b);
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  return (
    <svg class="scatter" viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" data-testid="trace-scatter" role="img" aria-label="trace durations over time">
      {ticks.map((f) => (
        <g>
          <line x1={pad.l} x2={W - pad.r} y1={y(f * maxD)} y2={y(f * maxD)} class="gridline" />
          <text x={pad.l - 6} y={y(f * maxD) + 4} text-anchor="end" class="axis-label">
            {fmtDuration(f * maxD)}
          </text>
          <text x={x(start + f * (end - start))} y={H - 6} text-anchor={f === 0 ? 'start' : f === 1 ? 'end' : 'middle'} class="axis-label">
            {fmtDateTime(start + f * (end - start)).slice(11, 19)}
          </text>
        </g>
      ))}
      {traces.map((t) => {
        const ms = nsToMs(t.start_time_unix_nano);
        return (
          <circle
            cx={x(Math.min(Math.max(ms, start), end))}
            cy={y(t.duration_ns / 1e6)}
            r="5"
            class={`dot-point ${t.error_count ? 'err' : ''}`}
            onClick={() => navigate(href(`/traces/${t.trace_id}`))}
          >
            <title>
              {t.root_service}: {t.root_name} — {fmtDuration(t.duration_ns / 1e6)}
            </title>
          </circle>
        );
      })}
    </svg>
  );
}
