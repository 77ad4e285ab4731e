// The global time range: relative (`now-1h` .. `now`) or absolute (epoch
// milliseconds), resolved to milliseconds at each refresh.

const UNITS: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 };

export function parseDuration(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(s.trim());
  if (!m) return null;
  return m[2] === 'ms' ? Number(m[1]) : Number(m[1]) * UNITS[m[2]];
}

/** `now`, `now-15m`, epoch ms, or an ISO date → epoch ms (null if invalid). */
export function resolveTime(s: string, now: number): number | null {
  s = s.trim();
  if (s === 'now') return now;
  if (s.startsWith('now-')) {
    const d = parseDuration(s.slice(4));
    return d === null ? null : now - d;
  }
  if (/^\d{10,16}$/.test(s)) return Number(s);
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : t;
}

export interface Range {
  from: string;
  to: string;
}
export interface Resolved {
  start: number;
  end: number;
}

export const DEFAULT_RANGE: Range = { from: 'now-1h', to: 'now' };

export function resolve(r: Range, now = Date.now()): Resolved {
  let start = resolveTime(r.from, now);
  let end = resolveTime(r.to, now);
  if (end === null) end = now;
  if (start === null || start >= end) start = end - 3600e3;
  return { start, end };
}

export const PRESETS: [string, string][] = [
  ['now-5m', 'Last 5 minutes'],
  ['now-15m', 'Last 15 minutes'],
  ['now-1h', 'Last 1 hour'],
  ['now-3h', 'Last 3 hours'],
  ['now-6h', 'Last 6 hours'],
  ['now-12h', 'Last 12 hours'],
  ['now-24h', 'Last 24 hours'],
  ['now-2d', 'Last 2 days'],
  ['now-7d', 'Last 7 days'],
];

export function describe(r: Range): string {
  if (r.to === 'now') {
    const p = PRESETS.find(([f]) => f === r.from);
    if (p) return p[1];
    if (r.from.startsWith('now-')) return `Last ${r.from.slice(4)}`;
  }
  const fmt = (s: string) => {
    const t = resolveTime(s, Date.now());
    return t === null ? s : s.startsWith('now') ? s : fmtDateTime(t);
  };
  return `${fmt(r.from)} → ${fmt(r.to)}`;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');
export function fmtDateTime(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
export function fmtTime(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
/** For `<input type="datetime-local">`. */
export function toLocalInput(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A step giving about `points` points over the range, rounded to a nice value. */
export function niceStep(rangeMs: number, points = 120): number {
  const raw = rangeMs / points;
  const steps = [1e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 43200e3, 86400e3];
  return steps.find((s) => s >= raw) ?? 86400e3;
}

export function fmtDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms === 0) return '0';
  if (ms < 1) return `${(ms * 1000).toFixed(ms < 0.01 ? 2 : 0)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)} ms`;
  if (ms < 60e3) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60e3).toFixed(1)} min`;
}

export function fmtNum(n: number | null | undefined, digits = 2): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(digits)}G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(digits)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(digits)}k`;
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(a < 1 ? 3 : digits);
}
export const fmtPct = (r: number) => (r === 0 ? '0%' : r < 0.001 ? '<0.1%' : `${(r * 100).toFixed(1)}%`);

/** A rate per second, shown per minute or per hour when small. */
export function fmtRate(perSec: number | null | undefined): string {
  if (perSec === null || perSec === undefined || !Number.isFinite(perSec)) return '–';
  if (perSec === 0) return '0/s';
  if (perSec >= 0.1) return `${fmtNum(perSec)}/s`;
  if (perSec * 60 >= 0.1) return `${fmtNum(perSec * 60)}/min`;
  return `${fmtNum(perSec * 3600)}/h`;
}
