import { useMemo, useState } from 'preact/hooks';
import { get, nsToMs, type Span, type Trace } from '../api';
import { Attributes, colorFor, Empty, ErrorBox, Loading } from '../components/ui';
import { useFetch } from '../hooks';
import { href } from '../route';
import { fmtDateTime, fmtDuration, fmtTime } from '../time';

interface Node {
  span: Span;
  start: number; // ms
  end: number; // ms
  depth: number;
  children: Node[];
}

/** The span tree (children by start time); spans whose parent is missing become roots. */
function buildTree(spans: Span[]): Node[] {
  const nodes = new Map<string, Node>();
  for (const s of spans) {
    nodes.set(s.span_id, { span: s, start: nsToMs(s.start_time_unix_nano), end: nsToMs(s.end_time_unix_nano), depth: 0, children: [] });
  }
  const roots: Node[] = [];
  for (const n of nodes.values()) {
    const p = n.span.parent_span_id ? nodes.get(n.span.parent_span_id) : undefined;
    if (p && p !== n) p.children.push(n);
    else roots.push(n);
  }
  const byStart = (a: Node, b: Node) => a.start - b.start || a.span.name.localeCompare(b.span.name);
  const seen = new Set<Node>();
  const walk = (n: Node, d: number) => {
    if (seen.has(n)) return;
    seen.add(n);
    n.depth = d;
    n.children.sort(byStart);
    n.children.forEach((c) => walk(c, d + 1));
  };
  roots.sort(byStart).forEach((r) => walk(r, 0));
  return roots;
}

/**
 * The critical path: from the root's end, walk back through the child that
 * finished last before the current point, then the one before its start,
 * and so on, recursively. These spans determined the trace's duration.
 */
function criticalPath(roots: Node[]): Set<string> {
  const out = new Set<string>();
  const visit = (n: Node, cutoff: number, guard: number) => {
    if (guard > 10_000) return;
    out.add(n.span.span_id);
    let cursor = Math.min(n.end, cutoff);
    const kids = [...n.children].sort((a, b) => b.end - a.end);
    for (const c of kids) {
      if (c.start >= cursor) continue;
      if (c.end <= n.start) continue;
      visit(c, cursor, guard + 1);
      cursor = Math.max(c.start, n.start);
    }
  };
  const main = roots.reduce<Node | undefined>((a, r) => (!a || r.end - r.start > a.end - a.start ? r : a), undefined);
  if (main) visit(main, main.end, 0);
  return out;
}

export function TracePage({ id }: { id: string }) {
  const f = useFetch((s) => get<Trace>(`/api/v1/traces/${id}`, s), [id]);
  if (f.error) {
    return (
      <div class="page">
        <div class="crumbs">
          <a href={href('/traces')}>Traces</a> / <span class="mono">{id}</span>
        </div>
        <ErrorBox error={f.error} title={f.error.message === 'trace not found' ? 'Trace not found' : 'Could not load the trace'} />
      </div>
    );
  }
  if (!f.data) return <div class="page"><Loading on={f.loading} label="Loading the trace…" /></div>;
  return <TraceView trace={f.data} />;
}

function TraceView({ trace }: { trace: Trace }) {
  const roots = useMemo(() => buildTree(trace.spans), [trace]);
  const critical = useMemo(() => criticalPath(roots), [roots]);
  const [collapsed, setCollapsed] = useState<Set<string>>(new Set());
  const [selected, setSelected] = useState<string | null>(null);
  const [showCritical, setShowCritical] = useState(true);
  const t0 = Math.min(...roots.flatMap(function all(n: Node): number[] {
    return [n.start, ...n.children.flatMap(all)];
  }));
  const t1 = Math.max(...trace.spans.map((s) => nsToMs(s.end_time_unix_nano)));
  const total = Math.max(t1 - t0, 1e-6);

  const rows: Node[] = [];
  const seen = new Set<Node>();
  const flatten = (n: Node) => {
    if (seen.has(n)) return;
    seen.add(n);
    rows.push(n);
    if (!collapsed.has(n.span.span_id)) n.children.forEach(flatten);
  };
  roots.forEach(flatten);
  const toggle = (id: string) => {
    const s = new Set(collapsed);
    s.has(id) ? s.delete(id) : s.add(id);
    setCollapsed(s);
  };
  const sel = trace.spans.find((s) => s.span_id === selected);
  const sum = trace.summary;
  // The logs of the trace, a little around its time range.
  const logsHref = href('/logs', { q: `trace_id:${sum.trace_id}`, from: String(Math.floor(t0 - 5 * 60e3)), to: String(Math.ceil(t1 + 5 * 60e3)) });
  const services = [...new Set(trace.spans.map((s) => s.service))];
  const ticks = [0, 0.25, 0.5, 0.75, 1];

  return (
    <div class="page trace-page">
      <div class="crumbs">
        <a href={href('/traces')}>Traces</a> / <span class="mono">{sum.trace_id}</span>
      </div>
      <h1 data-testid="trace-title">
        {sum.root_service}: {sum.root_name}
      </h1>
      <div class="meta-line">
        <span>{fmtDateTime(t0)}</span>
        <span>Duration {fmtDuration(total)}</span>
        <span>{trace.spans.length} spans</span>
        <span class={sum.error_count ? 'bad' : ''}>{sum.error_count} errors</span>
        <span>
          {services.map((s) => (
            <span class="chip" style={{ borderColor: colorFor(s) }}>
              {s}
            </span>
          ))}
        </span>
      </div>
      <div class="actions">
        <a class="btn primary" href={logsHref} data-testid="trace-logs-link">
          Logs of this trace{trace.span_ids_with_logs.length ? ` (${trace.span_ids_with_logs.length} spans with logs)` : ''}
        </a>
        <button class="btn" onClick={() => setCollapsed(new Set())}>
          Expand all
        </button>
        <button class="btn" onClick={() => setCollapsed(new Set(trace.spans.filter((s) => trace.spans.some((c) => c.parent_span_id === s.span_id)).map((s) => s.span_id)))}>
          Collapse all
        </button>
        <label class="check">
          <input type="checkbox" checked={showCritical} onChange={() => setShowCritical(!showCritical)} /> Underline the critical path
        </label>
      </div>
      <div class="trace-layout">
        <section class="panel waterfall" data-testid="waterfall">
          <div class="wf-row wf-head">
            <div class="wf-name">Service: operation</div>
            <div class="wf-bar-cell">
              {ticks.map((f) => (
                <span class="wf-tick" style={{ left: `${f * 100}%` }}>
                  {f === 0 ? '0' : fmtDuration(f * total)}
                </span>
              ))}
            </div>
          </div>
          {rows.map((n) => {
            const s = n.span;
            const left = ((n.start - t0) / total) * 100;
            const width = Math.max(((n.end - n.start) / total) * 100, 0.2);
            const err = s.status.code === 'error';
            const crit = showCritical && critical.has(s.span_id);
            return (
              <div
                key={s.span_id}
                class={`wf-row ${selected === s.span_id ? 'selected' : ''}`}
                onClick={() => setSelected(selected === s.span_id ? null : s.span_id)}
                data-testid="span-row"
              >
                <div class="wf-name" style={{ paddingLeft: `${n.depth * 14 + 4}px` }}>
                  {n.children.length ? (
                    <button
                      class="twisty"
                      aria-label={collapsed.has(s.span_id) ? 'expand' : 'collapse'}
                      onClick={(e) => {
                        e.stopPropagation();
                        toggle(s.span_id);
                      }}
                    >
                      {collapsed.has(s.span_id) ? '▸' : '▾'}
                    </button>
                  ) : (
                    <span class="twisty" />
                  )}
                  <span class="dot" style={{ background: colorFor(s.service) }} />
                  <span class="svc">{s.service}</span> <span class="op">{s.name}</span>
                  {err && <span class="badge err">error</span>}
                  {s.has_logs && <span class="badge">logs</span>}
                  {collapsed.has(s.span_id) && <span class="muted small"> +{n.children.length}</span>}
                </div>
                <div class="wf-bar-cell">
                  <div
                    class={`wf-bar ${err ? 'err' : ''} ${crit ? 'critical' : ''}`}
                    style={{ left: `${left}%`, width: `${width}%`, background: colorFor(s.service) }}
                    title={`${fmtDuration(n.end - n.start)}${crit ? ' (critical path)' : ''}`}
                  />
                  {/* The duration beside the bar: after it; before it when the bar ends near
                      the right edge; inside its end when it spans nearly the whole trace. */}
                  <span
                    class={`wf-dur ${left + width > 85 && left < 15 ? 'inside' : ''}`}
                    style={
                      left + width <= 85
                        ? { left: `${left + width}%`, marginLeft: '6px' }
                        : left >= 15
                          ? { right: `${100 - left}%`, marginRight: '6px' }
                          : { right: `${100 - left - width}%`, marginRight: '4px' }
                    }
                  >
                    {fmtDuration(n.end - n.start)}
                  </span>
                </div>
              </div>
            );
          })}
        </section>
        {sel ? (
          <SpanDetails span={sel} t0={t0} onClose={() => setSelected(null)} />
        ) : (
          <aside class="panel span-details muted">
            <Empty>Select a span to see its attributes, events and resource.</Empty>
          </aside>
        )}
      </div>
    </div>
  );
}

function SpanDetails({ span, t0, onClose }: { span: Span; t0: number; onClose: () => void }) {
  const start = nsToMs(span.start_time_unix_nano);
  const exceptions = span.events.filter((e) => e.name === 'exception');
  const others = span.events.filter((e) => e.name !== 'exception');
  return (
    <aside class="panel span-details" data-testid="span-details">
      <div class="details-head">
        <h3>
          {span.service}: {span.name}
        </h3>
        <button class="btn small" onClick={onClose} aria-label="Close">
          ✕
        </button>
      </div>
      <table class="kv">
        <tbody>
          <tr>
            <th>Span id</th>
            <td class="mono">{span.span_id}</td>
          </tr>
          <tr>
            <th>Parent</th>
            <td class="mono">{span.parent_span_id ?? '(root)'}</td>
          </tr>
          <tr>
            <th>Kind</th>
            <td>{span.kind}</td>
          </tr>
          <tr>
            <th>Start</th>
            <td>
              {fmtTime(start)} (+{fmtDuration(start - t0)})
            </td>
          </tr>
          <tr>
            <th>Duration</th>
            <td>{fmtDuration(span.duration_ns / 1e6)}</td>
          </tr>
          <tr>
            <th>Status</th>
            <td class={span.status.code === 'error' ? 'bad' : ''}>
              {span.status.code}
              {span.status.message ? `: ${span.status.message}` : ''}
            </td>
          </tr>
          <tr>
            <th>Scope</th>
            <td>
              {span.scope.name} {span.scope.version}
            </td>
          </tr>
        </tbody>
      </table>
      <div class="actions">
        <a class="btn small" href={href('/logs', { q: `span_id:${span.span_id}`, from: String(Math.floor(start - 5 * 60e3)), to: String(Math.ceil(start + span.duration_ns / 1e6 + 5 * 60e3)) })}>
          Logs of this span
        </a>
      </div>
      {exceptions.length > 0 && (
        <>
          <h4>Exceptions</h4>
          {exceptions.map((e) => (
            <div class="exception">
              <b>{String(e.attributes['exception.type'] ?? 'exception')}</b>: {String(e.attributes['exception.message'] ?? '')}
              {e.attributes['exception.stacktrace'] ? <pre>{String(e.attributes['exception.stacktrace'])}</pre> : null}
            </div>
          ))}
        </>
      )}
      <h4>Attributes</h4>
      <Attributes attrs={span.attributes} />
      <h4>Events</h4>
      {others.length === 0 ? (
        <div class="muted small">none</div>
      ) : (
        others.map((e) => (
          <div class="event">
            <div>
              <b>{e.name}</b> <span class="muted">+{fmtDuration(nsToMs(e.time_unix_nano) - start)}</span>
            </div>
            <Attributes attrs={e.attributes} />
          </div>
        ))
      )}
      {span.links.length > 0 && (
        <>
          <h4>Links</h4>
          {span.links.map((l) => (
            <div>
              <a class="mono small" href={href(`/traces/${l.trace_id}`)}>
                {l.trace_id.slice(0, 16)}… / {l.span_id}
              </a>
            </div>
          ))}
        </>
      )}
      <h4>Resource</h4>
      <Attributes attrs={span.resource} />
    </aside>
  );
}
