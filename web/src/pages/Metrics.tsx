import { useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, get, qs, sql, type PromMatrix, type SqlResult } from '../api';
import { TimeChart, type ChartSeries } from '../components/Chart';
import { Empty, ErrorBox, Loading, Status } from '../components/ui';
import { useFetch, useTime } from '../hooks';
import { setParams, useRoute } from '../route';
import { fmtNum, niceStep } from '../time';

const FUNCTIONS = [
  'rate', 'irate', 'increase', 'sum', 'avg', 'min', 'max', 'count', 'topk', 'bottomk', 'histogram_quantile',
  'avg_over_time', 'max_over_time', 'min_over_time', 'sum_over_time', 'count_over_time', 'quantile_over_time',
  'abs', 'absent', 'delta', 'deriv', 'label_replace', 'clamp_min', 'clamp_max', 'by', 'without', 'offset',
];

export function MetricsPage() {
  const { params } = useRoute();
  const tab = params.get('tab') === 'sql' ? 'sql' : 'promql';
  return (
    <div class="page">
      <h1>Metrics</h1>
      <div class="tabs" role="tablist">
        <button role="tab" class={tab === 'promql' ? 'active' : ''} onClick={() => setParams({ tab: undefined })} data-testid="tab-promql">
          PromQL
        </button>
        <button role="tab" class={tab === 'sql' ? 'active' : ''} onClick={() => setParams({ tab: 'sql' })} data-testid="tab-sql">
          SQL
        </button>
      </div>
      {tab === 'sql' ? <SqlTab /> : <PromTab />}
    </div>
  );
}

// ---------------------------------------------------------------- PromQL

function PromTab() {
  const { params } = useRoute();
  const { range, resolved, tick } = useTime();
  const query = params.get('query') ?? '';
  const stacked = params.get('stacked') === '1';
  const [text, setText] = useState(query);
  const names = useFetch((s) => get<{ data: string[] }>('/api/v1/label/__name__/values', s), [tick]);
  const labels = useFetch((s) => get<{ data: string[] }>('/api/v1/labels', s), [tick]);
  const stepMs = niceStep(resolved.end - resolved.start, 200);
  const result = useFetch(
    query
      ? (s) =>
          get<PromMatrix>(
            `/api/v1/query_range${qs({ query, start: resolved.start / 1000, end: resolved.end / 1000, step: stepMs / 1000 })}`,
            s,
          )
      : null,
    [query, resolved.start, resolved.end, tick],
    `${query}|${range.from}|${range.to}`,
  );
  const run = (q: string) => setParams({ query: q.trim() || undefined });

  return (
    <div class="metrics-layout">
      <MetricBrowser
        names={names.data?.data}
        error={names.error}
        onPick={(q) => {
          setText(q);
          run(q);
        }}
      />
      <div class="metrics-main">
        <form
          class="panel query-form"
          onSubmit={(e) => {
            e.preventDefault();
            run(text);
          }}
        >
          <PromInput value={text} onChange={setText} metrics={names.data?.data ?? []} labels={labels.data?.data ?? []} />
          <button class="btn primary" type="submit" data-testid="promql-run">
            Run
          </button>
          <label class="check">
            <input type="checkbox" checked={stacked} onChange={() => setParams({ stacked: stacked ? undefined : '1' }, true)} /> Stacked
          </label>
        </form>
        {!query ? (
          <Empty>Enter a PromQL expression, e.g. <code>sum by (job) (rate(http_server_duration_count[5m]))</code>, or pick a metric on the left.</Empty>
        ) : (
          <Status f={result} what="the query">
            {(d) => <PromResult d={d} stacked={stacked} />}
          </Status>
        )}
      </div>
    </div>
  );
}

function seriesLabel(metric: Record<string, string>): string {
  const { __name__, ...rest } = metric;
  const l = Object.entries(rest)
    .map(([k, v]) => `${k}="${v}"`)
    .join(', ');
  return `${__name__ ?? ''}{${l}}`;
}

function PromResult({ d, stacked }: { d: PromMatrix; stacked: boolean }) {
  const { x, series } = useMemo(() => {
    const res = d.data.resultType === 'matrix' ? (d.data.result as { metric: Record<string, string>; values: [number, string][] }[]) : [];
    const xs = [...new Set(res.flatMap((r) => r.values.map((v) => v[0])))].sort((a, b) => a - b);
    const idx = new Map(xs.map((t, i) => [t, i]));
    const series: ChartSeries[] = res.slice(0, 50).map((r) => {
      const vals: (number | null)[] = new Array(xs.length).fill(null);
      r.values.forEach(([t, v]) => (vals[idx.get(t)!] = Number(v)));
      return { label: seriesLabel(r.metric), values: vals };
    });
    return { x: xs, series };
  }, [d]);
  const total = d.data.resultType === 'matrix' ? (d.data.result as unknown[]).length : 0;
  return (
    <>
      {d.warnings?.map((w) => <div class="warn">{w}</div>)}
      {series.length === 0 ? (
        <Empty>The query returned no series in this time range.</Empty>
      ) : (
        <section class="panel">
          {total > series.length && <div class="warn">Showing the first {series.length} of {total} series.</div>}
          <TimeChart x={x} series={series} stacked={stacked} testId="promql-chart" height={320} />
          <table class="grid small">
            <thead>
              <tr>
                <th>Series</th>
                <th class="num">Last</th>
              </tr>
            </thead>
            <tbody>
              {series.map((s) => {
                const last = [...s.values].reverse().find((v) => v !== null);
                return (
                  <tr>
                    <td class="mono">{s.label}</td>
                    <td class="num">{fmtNum(last ?? null)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </section>
      )}
    </>
  );
}

/** A query box that completes metric names, functions and (inside `{}`) label names. */
function PromInput({
  value,
  onChange,
  metrics,
  labels,
}: {
  value: string;
  onChange: (s: string) => void;
  metrics: string[];
  labels: string[];
}) {
  const ref = useRef<HTMLInputElement>(null);
  const [sugg, setSugg] = useState<string[]>([]);
  const [active, setActive] = useState(0);
  const wordAt = (s: string, pos: number) => {
    let i = pos;
    while (i > 0 && /[\w:]/.test(s[i - 1])) i--;
    return { start: i, word: s.slice(i, pos) };
  };
  const update = (s: string, pos: number) => {
    const { word } = wordAt(s, pos);
    if (!word) return setSugg([]);
    const before = s.slice(0, pos);
    const inBraces = before.lastIndexOf('{') > before.lastIndexOf('}');
    const inBy = /\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$/.test(before);
    const pool = inBraces || inBy ? labels : [...FUNCTIONS, ...metrics];
    const w = word.toLowerCase();
    const starts = pool.filter((m) => m.toLowerCase().startsWith(w) && m !== word);
    const contains = pool.filter((m) => !m.toLowerCase().startsWith(w) && m.toLowerCase().includes(w));
    setSugg([...starts, ...contains].slice(0, 12));
    setActive(0);
  };
  const accept = (m: string) => {
    const el = ref.current!;
    const pos = el.selectionStart ?? value.length;
    const { start } = wordAt(el.value, pos);
    const next = el.value.slice(0, start) + m + el.value.slice(pos);
    // The DOM first, synchronously, so keys typed right after land after the completion.
    el.value = next;
    el.setSelectionRange(start + m.length, start + m.length);
    el.focus();
    onChange(next);
    setSugg([]);
  };
  return (
    <div class="autocomplete">
      <input
        ref={ref}
        class="query-input mono"
        data-testid="promql-input"
        value={value}
        placeholder="rate(http_requests_total[5m])"
        aria-label="PromQL query"
        autocomplete="off"
        spellcheck={false}
        onInput={(e) => {
          const el = e.target as HTMLInputElement;
          onChange(el.value);
          update(el.value, el.selectionStart ?? el.value.length);
        }}
        onBlur={() => setTimeout(() => setSugg([]), 150)}
        onKeyDown={(e) => {
          if (!sugg.length) return;
          if (e.key === 'ArrowDown') {
            e.preventDefault();
            setActive((a) => (a + 1) % sugg.length);
          } else if (e.key === 'ArrowUp') {
            e.preventDefault();
            setActive((a) => (a - 1 + sugg.length) % sugg.length);
          } else if (e.key === 'Tab' || (e.key === 'Enter' && sugg.length)) {
            e.preventDefault();
            accept(sugg[active]);
          } else if (e.key === 'Escape') {
            setSugg([]);
          }
        }}
      />
      {sugg.length > 0 && (
        <ul class="suggestions" role="listbox" data-testid="promql-suggestions">
          {sugg.map((m, i) => (
            <li
              role="option"
              aria-selected={i === active}
              class={i === active ? 'active' : ''}
              onMouseDown={(e) => {
                e.preventDefault();
                accept(m);
              }}
            >
              {m}
              {FUNCTIONS.includes(m) && <span class="muted small"> function</span>}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function MetricBrowser({ names, error, onPick }: { names?: string[]; error?: Error; onPick: (q: string) => void }) {
  const [filter, setFilter] = useState('');
  const [metric, setMetric] = useState<string | null>(null);
  const series = useFetch(
    metric ? (s) => get<{ data: Record<string, string>[] }>(`/api/v1/series${qs({ 'match[]': metric, limit: 500 })}`, s) : null,
    [metric],
  );
  const labelValues = useMemo(() => {
    const m = new Map<string, Set<string>>();
    series.data?.data.forEach((s) =>
      Object.entries(s).forEach(([k, v]) => {
        if (k === '__name__') return;
        if (!m.has(k)) m.set(k, new Set());
        m.get(k)!.add(v);
      }),
    );
    return [...m].sort(([a], [b]) => a.localeCompare(b));
  }, [series.data]);
  const shown = (names ?? []).filter((n) => n.toLowerCase().includes(filter.toLowerCase())).slice(0, 300);
  return (
    <aside class="panel metric-browser" data-testid="metric-browser">
      <h3>Metrics</h3>
      <input placeholder="Filter metrics" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} aria-label="Filter metrics" />
      {error && <ErrorBox error={error} title="Could not list metrics" />}
      {names && names.length === 0 && <Empty>No metrics yet. Send metrics over OTLP or Prometheus remote_write.</Empty>}
      <ul class="metric-list">
        {shown.map((n) => (
          <li class={metric === n ? 'active' : ''}>
            <button class="link" onClick={() => setMetric(metric === n ? null : n)} title="Show labels">
              {n}
            </button>
            <button class="btn tiny" onClick={() => onPick(n)} title="Query this metric">
              ▶
            </button>
            {metric === n && (
              <div class="labels">
                <Loading on={series.loading} />
                {series.error && <ErrorBox error={series.error} />}
                {labelValues.map(([k, vs]) => (
                  <div class="label-group">
                    <b>{k}</b>
                    {[...vs].slice(0, 20).map((v) => (
                      <button class="chip link" onClick={() => onPick(`${n}{${k}="${v.replace(/["\\]/g, '\\$&')}"}`)}>
                        {v}
                      </button>
                    ))}
                    {vs.size > 20 && <span class="muted small"> +{vs.size - 20} more</span>}
                  </div>
                ))}
              </div>
            )}
          </li>
        ))}
      </ul>
      {names && names.length > shown.length && <div class="muted small">{names.length - shown.length} more: narrow the filter</div>}
    </aside>
  );
}

// ---------------------------------------------------------------- SQL

const NUMERIC = /^(u?int|float|decimal|double|real|bigint|smallint|tinyint)/i;
const TIMELIKE = /^(timestamp|date|time)/i;

function isTimeColumn(c: { name: string; type: string }, rows: unknown[][], i: number): boolean {
  if (TIMELIKE.test(c.type)) return true;
  const v = rows[0]?.[i];
  return typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v) && !Number.isNaN(Date.parse(v));
}

function toSeconds(v: unknown): number | null {
  if (typeof v === 'number') {
    // ns, µs, ms or s since the epoch, by magnitude.
    if (v > 1e17) return v / 1e9;
    if (v > 1e14) return v / 1e6;
    if (v > 1e11) return v / 1e3;
    return v;
  }
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : t / 1000;
  }
  return null;
}

function SqlTab() {
  const { params } = useRoute();
  const q = params.get('sql') ?? '';
  const [text, setText] = useState(q || 'SELECT service, count(*) AS spans FROM spans GROUP BY service ORDER BY spans DESC LIMIT 20');
  const { tick } = useTime();
  const res = useFetch(q ? (s) => sql(q, s) : null, [q, tick], q);
  return (
    <div class="sql-tab">
      <form
        class="panel query-form column"
        onSubmit={(e) => {
          e.preventDefault();
          setParams({ sql: text.trim() || undefined });
        }}
      >
        <textarea
          class="mono"
          rows={4}
          data-testid="sql-input"
          value={text}
          aria-label="SQL query"
          onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
              e.preventDefault();
              setParams({ sql: text.trim() || undefined });
            }
          }}
        />
        <div class="row">
          <button class="btn primary" type="submit" data-testid="sql-run">
            Run (Ctrl+Enter)
          </button>
          <span class="muted small">Tables: spans, logs, metrics. Read-only.</span>
        </div>
      </form>
      {!q ? (
        <Empty>Write a query over the spans, logs and metrics tables and run it.</Empty>
      ) : res.error ? (
        <ErrorBox
          error={res.error instanceof ApiError && res.error.status === 404 ? new Error(`this server has no SQL API (POST /api/v1/sql answered 404: ${res.error.message})`) : res.error}
          title="The SQL query failed"
        />
      ) : !res.data ? (
        <Loading on={res.loading} label="Running…" />
      ) : (
        <SqlResultView r={res.data} />
      )}
    </div>
  );
}

function SqlResultView({ r }: { r: SqlResult }) {
  const chart = useMemo(() => {
    if (r.rows.length < 2 || r.columns.length < 2 || !isTimeColumn(r.columns[0], r.rows, 0)) return null;
    const num = r.columns.map((c, i) => ({ c, i })).filter(({ c, i }) => i > 0 && (NUMERIC.test(c.type) || typeof r.rows[0][i] === 'number'));
    if (!num.length) return null;
    const rows = r.rows.map((row) => ({ t: toSeconds(row[0]), row })).filter((x) => x.t !== null).sort((a, b) => a.t! - b.t!);
    const x = rows.map((x) => x.t!);
    const series: ChartSeries[] = num.map(({ c, i }) => ({ label: c.name, values: rows.map(({ row }) => (row[i] === null ? null : Number(row[i]))) }));
    return { x, series };
  }, [r]);
  return (
    <section class="panel">
      <div class="panel-head">
        <span>
          {r.row_count} rows in {r.elapsed_ms.toFixed(1)} ms{r.truncated ? ' (truncated)' : ''}
        </span>
      </div>
      {chart && <TimeChart x={chart.x} series={chart.series} testId="sql-chart" />}
      {r.rows.length === 0 ? (
        <Empty>The query returned no rows.</Empty>
      ) : (
        <div class="table-scroll">
          <table class="grid small" data-testid="sql-table">
            <thead>
              <tr>
                {r.columns.map((c) => (
                  <th title={c.type}>{c.name}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {r.rows.slice(0, 1000).map((row) => (
                <tr>
                  {row.map((v) => (
                    <td class={typeof v === 'number' ? 'num' : ''}>{v === null ? <span class="muted">null</span> : typeof v === 'object' ? JSON.stringify(v) : String(v)}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
