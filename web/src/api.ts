// Typed fetch helpers for tern's HTTP API. Every request has a timeout and
// an AbortSignal; every error becomes an `ApiError` with the server's own
// message (tern's `{error:{code,message}}`, Prometheus's `{status:"error"}`).

export class ApiError extends Error {
  constructor(message: string, public status: number, public code: string) {
    super(message);
  }
}

let inflight = 0;
const inflightListeners = new Set<(n: number) => void>();
export function onInflight(f: (n: number) => void): () => void {
  inflightListeners.add(f);
  return () => inflightListeners.delete(f);
}
function bump(d: number) {
  inflight += d;
  inflightListeners.forEach((f) => f(inflight));
}

const TIMEOUT_MS = 60_000;

export async function request<T>(path: string, init: RequestInit = {}, signal?: AbortSignal): Promise<T> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new DOMException('timed out', 'TimeoutError')), TIMEOUT_MS);
  const onAbort = () => ctl.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort);
  bump(1);
  try {
    let res: Response;
    try {
      res = await fetch(path, { ...init, signal: ctl.signal, headers: { accept: 'application/json', ...(init.headers ?? {}) } });
    } catch (e) {
      if (signal?.aborted) throw e;
      if (ctl.signal.aborted) throw new ApiError(`the request timed out after ${TIMEOUT_MS / 1000} s`, 0, 'timeout');
      throw new ApiError(`cannot reach the server: ${(e as Error).message}`, 0, 'network');
    }
    const text = await res.text();
    let body: any = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (!res.ok || body?.status === 'error') {
      const msg =
        body?.error?.message ??
        (typeof body?.error === 'string' ? body.error : undefined) ??
        body?.errors?.[0]?.msg ??
        (text.trim().slice(0, 300) || res.statusText);
      const code = body?.error?.code ?? body?.errorType ?? String(res.status);
      throw new ApiError(msg, res.status, code);
    }
    if (res.status === 204) return undefined as T;
    if (body === undefined) throw new ApiError('the server sent no JSON', res.status, 'bad_response');
    return body as T;
  } finally {
    bump(-1);
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

export function qs(params: Record<string, string | number | boolean | undefined | null | (string | number)[]>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => u.append(k, String(x)));
    else u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

export const get = <T>(path: string, signal?: AbortSignal) => request<T>(path, {}, signal);

/** Milliseconds to the nanosecond strings the native APIs take. */
export const ns = (ms: number) => `${Math.round(ms)}000000`;
/** Nanosecond strings (or numbers) to milliseconds. */
export const nsToMs = (v: string | number) => (typeof v === 'number' ? v / 1e6 : Number(BigInt(v) / 1000n) / 1000);

// ---- traces ----------------------------------------------------------------

export interface Red {
  requests: number;
  errors: number;
  rate: number;
  error_rate: number;
  avg_ms: number | null;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
}
export interface RedPoint extends Red {
  time_ms: number;
}
export interface OperationOverview {
  operation: string;
  totals: Red;
  series: RedPoint[];
}
export interface ServiceOverview {
  service: string;
  step_seconds: number;
  totals: Red;
  series: RedPoint[];
  operations: OperationOverview[];
}
export interface Edge {
  caller: string;
  callee: string;
  calls: number;
  errors: number;
}
export interface TraceSummary {
  trace_id: string;
  root_service: string;
  root_name: string;
  root_known: boolean;
  start_time_unix_nano: string;
  duration_ns: number;
  span_count: number;
  error_count: number;
  services: string[];
}
export type Attrs = Record<string, unknown>;
export interface SpanEvent {
  time_unix_nano: string;
  name: string;
  attributes: Attrs;
}
export interface Span {
  trace_id: string;
  span_id: string;
  parent_span_id: string | null;
  name: string;
  kind: string;
  service: string;
  start_time_unix_nano: string;
  end_time_unix_nano: string;
  duration_ns: number;
  status: { code: 'unset' | 'ok' | 'error'; message: string };
  attributes: Attrs;
  resource: Attrs;
  scope: { name: string; version: string };
  events: SpanEvent[];
  links: { trace_id: string; span_id: string; attributes: Attrs }[];
  has_logs?: boolean;
}
export interface Trace {
  summary: TraceSummary;
  spans: Span[];
  span_ids_with_logs: string[];
}

// ---- logs ------------------------------------------------------------------

export interface LogRecord {
  id: string;
  timestamp: string;
  time_ns: string;
  severity: string;
  severity_number: number;
  severity_text: string;
  service: string;
  body: unknown;
  attributes: Attrs;
  resource: Attrs;
  scope: { name: string; version: string };
  trace_id: string | null;
  span_id: string | null;
}
export interface LogBucket {
  start_ns: string;
  timestamp: string;
  total: number;
  by_severity: Record<string, number>;
}
export interface LogPage {
  records: LogRecord[];
  total: number;
  next_cursor: string | null;
  histogram?: { step_ns: string; buckets: LogBucket[] };
}

// ---- prometheus ------------------------------------------------------------

export interface PromMatrix {
  status: 'success';
  data: { resultType: 'matrix' | 'vector' | 'scalar' | 'string'; result: any };
  warnings?: string[];
}

// ---- sql -------------------------------------------------------------------

export interface SqlResult {
  columns: { name: string; type: string }[];
  rows: unknown[][];
  row_count: number;
  truncated: boolean;
  elapsed_ms: number;
}
export const sql = (query: string, signal?: AbortSignal) =>
  request<SqlResult>('/api/v1/sql', { method: 'POST', body: JSON.stringify({ query }), headers: { 'content-type': 'application/json' } }, signal);

// ---- alerting --------------------------------------------------------------

export type Labels = Record<string, string>;
export interface PromAlert {
  labels: Labels;
  annotations: Labels;
  state: 'pending' | 'firing';
  activeAt: string;
  value: string;
  keepFiringSince?: string;
}
export interface PromRule {
  type: 'alerting' | 'recording';
  name: string;
  query: string;
  duration?: number;
  keepFiringFor?: number;
  labels?: Labels;
  annotations?: Labels;
  alerts?: PromAlert[];
  state?: 'inactive' | 'pending' | 'firing';
  health: 'ok' | 'err' | 'unknown';
  lastError: string;
  evaluationTime: number;
  lastEvaluation: string;
}
export interface PromRuleGroup {
  name: string;
  file: 'api' | 'slo';
  interval: number;
  limit: number;
  rules: PromRule[];
  evaluationTime: number;
  lastEvaluation: string;
}
export interface Silence {
  id: string;
  matchers: string[];
  startsAt: string;
  endsAt: string;
  createdBy: string;
  comment: string;
  status: { state: 'pending' | 'active' | 'expired' };
}
export interface HistoryEntry {
  time: string;
  rule: string;
  fingerprint: string;
  from: string;
  to: string;
  value: number;
  labels: Labels;
}
export interface Channel {
  name: string;
  type: string;
  status: {
    last_success_ms: number | null;
    last_error: string | null;
    last_error_ms: number | null;
    consecutive_failures: number;
    delivered: number;
    failed: number;
    dropped: number;
    failing: boolean;
  };
}
export interface NewSilence {
  matchers: string[];
  duration?: string;
  endsAt?: string;
  createdBy: string;
  comment: string;
}
const json = (method: string, body: unknown): RequestInit => ({ method, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
export const createSilence = (s: NewSilence) => request<{ silenceID: string }>('/api/v1/alerting/silences', json('POST', s));
/** Expires a silence now (204). */
export const expireSilence = (id: string) => request<void>(`/api/v1/alerting/silences/${encodeURIComponent(id)}`, { method: 'DELETE' });

// ---- SLOs ------------------------------------------------------------------

export interface SloDef {
  name: string;
  description?: string;
  target: number;
  window: string;
  indicator: { promql?: { good: string; total: string }; spans?: { service: string; operation?: string; latency_threshold_ms?: number } };
  labels?: Labels;
  alerts: boolean;
}
export interface SloReport {
  name: string;
  target: number;
  window: string;
  t_ms: number;
  sli: number | null;
  events: { good: number; total: number };
  error_budget: { total: number; consumed: number; remaining: number; consumed_percent: number; remaining_percent: number };
  burn_rates: Record<string, number>;
}
export interface SloEntry {
  slo: SloDef;
  report?: SloReport;
  error?: string;
}
export interface BurndownPoint {
  time: string;
  /** null when the window so far allowed no budget (no events). */
  remaining_percent: number | null;
  consumed: number;
}
