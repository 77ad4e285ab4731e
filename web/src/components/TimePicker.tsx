import { useEffect, useState } from 'preact/hooks';
import { setParams } from '../route';
import { describe, PRESETS, resolve, resolveTime, toLocalInput, type Range } from '../time';

export const REFRESH: [string, string][] = [
  ['', 'Off'],
  ['5s', '5s'],
  ['10s', '10s'],
  ['30s', '30s'],
  ['1m', '1m'],
  ['5m', '5m'],
];

export function TimePicker({ range, refresh, onRefresh }: { range: Range; refresh: string; onRefresh: () => void }) {
  const [open, setOpen] = useState(false);
  const r = resolve(range);
  const [from, setFrom] = useState(toLocalInput(r.start));
  const [to, setTo] = useState(toLocalInput(r.end));
  const [err, setErr] = useState('');
  useEffect(() => {
    if (open) {
      const r = resolve(range);
      setFrom(toLocalInput(r.start));
      setTo(toLocalInput(r.end));
      setErr('');
    }
  }, [open]);
  const choose = (f: string, t = 'now') => {
    setParams({ from: f, to: t });
    setOpen(false);
  };
  const apply = (e: Event) => {
    e.preventDefault();
    const f = resolveTime(from, Date.now());
    const t = resolveTime(to, Date.now());
    if (f === null || t === null) return setErr('enter dates as YYYY-MM-DDTHH:MM[:SS]');
    if (f >= t) return setErr('the start must be before the end');
    choose(String(f), String(t));
  };
  return (
    <div class="timepicker">
      <button class="btn" data-testid="time-range" onClick={() => setOpen(!open)} aria-expanded={open}>
        {describe(range)}
      </button>
      <button class="btn" title="Refresh now" aria-label="Refresh" onClick={onRefresh}>
        ↻
      </button>
      <select
        class="btn"
        title="Auto-refresh"
        aria-label="Auto-refresh"
        value={refresh}
        onChange={(e) => setParams({ refresh: (e.target as HTMLSelectElement).value || undefined }, true)}
      >
        {REFRESH.map(([v, l]) => (
          <option value={v}>{v ? `Auto ${l}` : 'Auto-refresh off'}</option>
        ))}
      </select>
      {open && (
        <div class="popover" role="dialog">
          <div class="presets">
            {PRESETS.map(([f, l]) => (
              <button class={`link ${range.from === f && range.to === 'now' ? 'active' : ''}`} onClick={() => choose(f)}>
                {l}
              </button>
            ))}
          </div>
          <form class="absolute" onSubmit={apply}>
            <label>
              From <input type="datetime-local" step="1" value={from} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
            </label>
            <label>
              To <input type="datetime-local" step="1" value={to} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />
            </label>
            {err && <div class="field-error">{err}</div>}
            <button class="btn primary" type="submit">
              Apply absolute range
            </button>
          </form>
        </div>
      )}
    </div>
  );
}
