import { useMemo } from 'preact/hooks';
import { get, ns, qs, type Edge, type ServiceOverview } from '../api';
import { TimeChart } from '../components/Chart';
import { colorFor, Sparkline, Status } from '../components/ui';
import { useFetch, useTime } from '../hooks';
import { href } from '../route';
import { fmtDuration, fmtNum, fmtPct, fmtRate } from '../time';

function stepFor(rangeMs: number): string {
  // RED figures have minute resolution; aim for about 60 points.
  return `${Math.max(1, Math.round(rangeMs / 60 / 60e3))}m`;
}

export function ServicesPage() {
  const { resolved, tick } = useTime();
  const range = { start: ns(resolved.start), end: ns(resolved.end) };
  const overview = useFetch(
    (s) => get<{ services: ServiceOverview[] }>(`/api/v1/overview${qs({ ...range, step: stepFor(resolved.end - resolved.start) })}`, s),
    [resolved.start, resolved.end, tick],
  );
  const deps = useFetch((s) => get<{ edges: Edge[] }>(`/api/v1/dependencies${qs(range)}`, s), [resolved.start, resolved.end, tick]);
  return (
    <div class="page">
      <h1>Services</h1>
      <section class="panel">
        <Status
          f={overview}
          what="the services"
          isEmpty={(d) => d.services.length === 0}
          empty={
            <>
              No spans in this time range. Send traces over OTLP (gRPC <code>:4317</code>, HTTP <code>:4318</code>) or widen the
              time range.
            </>
          }
        >
          {(d) => (
            <table class="grid" data-testid="services-table">
              <thead>
                <tr>
                  <th>Service</th>
                  <th class="num">Requests</th>
                  <th class="num">Rate</th>
                  <th>Rate over time</th>
                  <th class="num">Error rate</th>
                  <th class="num">p50</th>
                  <th class="num">p95</th>
                  <th class="num">p99</th>
                </tr>
              </thead>
              <tbody>
                {d.services.map((s) => (
                  <tr key={s.service}>
                    <td>
                      <span class="dot" style={{ background: colorFor(s.service) }} />
                      <a href={href(`/services/${encodeURIComponent(s.service)}`)} data-testid="service-link">
                        {s.service}
                      </a>
                    </td>
                    <td class="num">{fmtNum(s.totals.requests)}</td>
                    <td class="num">{fmtRate(s.totals.rate)}</td>
                    <td>
                      <Sparkline values={s.series.map((p) => p.rate)} />
                    </td>
                    <td class={`num ${s.totals.error_rate > 0 ? 'bad' : ''}`}>{fmtPct(s.totals.error_rate)}</td>
                    <td class="num">{fmtDuration(s.totals.p50_ms)}</td>
                    <td class="num">{fmtDuration(s.totals.p95_ms)}</td>
                    <td class="num">{fmtDuration(s.totals.p99_ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </Status>
      </section>
      <h2>Service map</h2>
      <section class="panel">
        <Status
          f={deps}
          what="the dependencies"
          isEmpty={(d) => d.edges.length === 0}
          empty="No calls between services in this time range (a dependency is a span whose parent belongs to another service)."
        >
          {(d) => <ServiceMap edges={d.edges} />}
        </Status>
      </section>
    </div>
  );
}

/** Services in columns by call depth, calls as curves labelled with their count. */
export function ServiceMap({ edges }: { edges: Edge[] }) {
  const layout = useMemo(() => {
    const nodes = new Set<string>();
    edges.forEach((e) => (nodes.add(e.caller), nodes.add(e.callee)));
    const depth = new Map<string, number>([...nodes].map((n) => [n, 0]));
    // Longest path from a root, bounded by the node count (cycles stop).
    for (let i = 0; i < nodes.size; i++) {
      let changed = false;
      for (const e of edges) {
        if (e.caller === e.callee) continue;
        const d = depth.get(e.caller)! + 1;
        if (d > depth.get(e.callee)! && d < nodes.size) {
          depth.set(e.callee, d);
          changed = true;
        }
      }
      if (!changed) break;
    }
    const cols: string[][] = [];
    [...nodes].sort().forEach((n) => (cols[depth.get(n)!] ??= []).push(n));
    const colW = 280;
    const rowH = 70;
    const pos = new Map<string, { x: number; y: number }>();
    const rows = Math.max(...cols.map((c) => c?.length ?? 0));
    cols.forEach((c, ci) =>
      c?.forEach((n, ri) => pos.set(n, { x: 20 + ci * colW, y: 20 + (ri + (rows - c.length) / 2) * rowH })),
    );
    return { pos, width: 40 + cols.length * colW, height: 20 + rows * rowH };
  }, [edges]);
  const W = 160;
  const H = 36;
  return (
    <div class="map-wrap">
      <svg class="service-map" width={layout.width} height={layout.height} data-testid="service-map">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">
            <path d="M0,0 L10,5 L0,10 z" fill="var(--fg-muted)" />
          </marker>
        </defs>
        {edges.map((e) => {
          const a = layout.pos.get(e.caller)!;
          const b = layout.pos.get(e.callee)!;
          const x1 = a.x + W;
          const y1 = a.y + H / 2;
          const x2 = b.x;
          const y2 = b.y + H / 2;
          const self = e.caller === e.callee;
          const back = x2 <= x1;
          const d = self
            ? `M${a.x + W - 20},${a.y} c 30,-30 50,0 20,${H / 2}`
            : back
              ? `M${a.x + W / 2},${a.y + H} C ${a.x + W / 2},${a.y + H + 50} ${b.x + W / 2},${b.y + H + 50} ${b.x + W / 2},${b.y + H}`
              : `M${x1},${y1} C ${x1 + 40},${y1} ${x2 - 40},${y2} ${x2},${y2}`;
          const err = e.errors > 0;
          return (
            <g key={`${e.caller}>${e.callee}`}>
              <path d={d} class={`edge ${err ? 'err' : ''}`} marker-end="url(#arrow)">
                <title>
                  {e.caller} → {e.callee}: {e.calls} calls, {e.errors} errors
                </title>
              </path>
              {!self && (
                <text x={(x1 + x2) / 2} y={(y1 + y2) / 2 - 4} class="edge-label" text-anchor="middle">
                  {fmtNum(e.calls)}
                  {err ? ` (${fmtNum(e.errors)} err)` : ''}
                </text>
              )}
            </g>
          );
        })}
        {[...layout.pos].map(([n, p]) => (
          <a href={href(`/services/${encodeURIComponent(n)}`)} key={n}>
            <rect x={p.x} y={p.y} width={W} height={H} rx="6" class="node" style={{ stroke: colorFor(n) }} />
            <text x={p.x + W / 2} y={p.y + H / 2 + 4} text-anchor="middle" class="node-label">
              {n.length > 22 ? n.slice(0, 21) + '…' : n}
            </text>
          </a>
        ))}
      </svg>
    </div>
  );
}

export function ServicePage({ service }: { service: string }) {
  const { resolved, tick } = useTime();
  const f = useFetch(
    (s) =>
      get<ServiceOverview>(
        `/api/v1/services/${encodeURIComponent(service)}/overview${qs({ start: ns(resolved.start), end: ns(resolved.end), step: stepFor(resolved.end - resolved.start) })}`,
        s,
      ),
    [service, resolved.start, resolved.end, tick],
    service,
  );
  return (
    <div class="page">
      <div class="crumbs">
        <a href={href('/services')}>Services</a> / <span>{service}</span>
      </div>
      <h1>
        <span class="dot big" style={{ background: colorFor(service) }} />
        {service}
      </h1>
      <div class="actions">
        <a class="btn" href={href('/traces', { service })}>
          Traces of {service}
        </a>
        <a class="btn" href={href('/logs', { q: `service:"${service}"` })}>
          Logs of {service}
        </a>
      </div>
      <Status f={f} what="the service">
        {(d) => <ServiceDetail d={d} />}
      </Status>
    </div>
  );
}

function ServiceDetail({ d }: { d: ServiceOverview }) {
  const x = useMemo(() => d.series.map((p) => p.time_ms / 1000), [d]);
  const rate = useMemo(() => [{ label: 'requests/s', values: d.series.map((p) => p.rate) }], [d]);
  const errors = useMemo(() => [{ label: 'error rate %', values: d.series.map((p) => p.error_rate * 100), color: '#e15759' }], [d]);
  const lat = useMemo(
    () => [
      { label: 'p50 ms', values: d.series.map((p) => p.p50_ms) },
      { label: 'p95 ms', values: d.series.map((p) => p.p95_ms) },
      { label: 'p99 ms', values: d.series.map((p) => p.p99_ms) },
    ],
    [d],
  );
  const t = d.totals;
  return (
    <>
      <div class="stats">
        <div class="stat">
          <span>Rate</span>
          <b>{fmtRate(t.rate)}</b>
        </div>
        <div class="stat">
          <span>Requests</span>
          <b>{fmtNum(t.requests)}</b>
        </div>
        <div class={`stat ${t.error_rate > 0 ? 'bad' : ''}`}>
          <span>Error rate</span>
          <b>{fmtPct(t.error_rate)}</b>
        </div>
        <div class="stat">
          <span>p50</span>
          <b>{fmtDuration(t.p50_ms)}</b>
        </div>
        <div class="stat">
          <span>p95</span>
          <b>{fmtDuration(t.p95_ms)}</b>
        </div>
        <div class="stat">
          <span>p99</span>
          <b>{fmtDuration(t.p99_ms)}</b>
        </div>
      </div>
      <div class="chart-row">
        <section class="panel">
          <h3>Rate</h3>
          <TimeChart x={x} series={rate} height={180} />
        </section>
        <section class="panel">
          <h3>Errors</h3>
          <TimeChart x={x} series={errors} height={180} />
        </section>
        <section class="panel">
          <h3>Latency</h3>
          <TimeChart x={x} series={lat} height={180} yFormat={(v) => fmtDuration(v)} />
        </section>
      </div>
      <h2>Operations</h2>
      <section class="panel">
        <table class="grid" data-testid="operations-table">
          <thead>
            <tr>
              <th>Operation</th>
              <th class="num">Requests</th>
              <th class="num">Rate</th>
              <th>Rate over time</th>
              <th class="num">Error rate</th>
              <th class="num">p50</th>
              <th class="num">p95</th>
              <th class="num">p99</th>
            </tr>
          </thead>
          <tbody>
            {d.operations.map((o) => (
              <tr key={o.operation}>
                <td>
                  <a href={href('/traces', { service: d.service, operation: o.operation })}>{o.operation}</a>
                </td>
                <td class="num">{fmtNum(o.totals.requests)}</td>
                <td class="num">{fmtRate(o.totals.rate)}</td>
                <td>
                  <Sparkline values={o.series.map((p) => p.rate)} />
                </td>
                <td class={`num ${o.totals.error_rate > 0 ? 'bad' : ''}`}>{fmtPct(o.totals.error_rate)}</td>
                <td class="num">{fmtDuration(o.totals.p50_ms)}</td>
                <td class="num">{fmtDuration(o.totals.p95_ms)}</td>
                <td class="num">{fmtDuration(o.totals.p99_ms)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </>
  );
}
