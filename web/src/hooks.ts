import { createContext } from 'preact';
import { useContext, useEffect, useRef, useState } from 'preact/hooks';
import type { Range, Resolved } from './time';

export interface TimeCtx {
  range: Range;
  resolved: Resolved;
  /** Bumped by a manual refresh or the auto-refresh timer. */
  tick: number;
}
export const TimeContext = createContext<TimeCtx>(null as unknown as TimeCtx);
export const useTime = () => useContext(TimeContext);

export interface Fetched<T> {
  data: T | undefined;
  error: Error | undefined;
  loading: boolean;
}

/**
 * Runs `f` whenever `deps` change; aborts the previous run. Keeps the last
 * data while a refresh is loading, so auto-refresh does not flicker, unless
 * `key` (what is being asked, as opposed to when) changed: results of
 * another question are not shown as if they answered this one.
 */
export function useFetch<T>(f: ((signal: AbortSignal) => Promise<T>) | null, deps: unknown[], key?: string): Fetched<T> {
  const [state, set] = useState<Fetched<T>>({ data: undefined, error: undefined, loading: !!f });
  const fn = useRef(f);
  fn.current = f;
  const lastKey = useRef(key);
  useEffect(() => {
    const run = fn.current;
    const changed = key !== lastKey.current;
    lastKey.current = key;
    if (!run) {
      set({ data: undefined, error: undefined, loading: false });
      return;
    }
    const ctl = new AbortController();
    set((s) => (changed ? { data: undefined, error: undefined, loading: true } : { ...s, loading: true }));
    run(ctl.signal).then(
      (data) => !ctl.signal.aborted && set({ data, error: undefined, loading: false }),
      (error) => !ctl.signal.aborted && set({ data: undefined, error, loading: false }),
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}

/** True once `on` has been true for `ms`: loading indicators only for slow queries. */
export function useDelayed(on: boolean, ms = 250): boolean {
  const [v, set] = useState(false);
  useEffect(() => {
    if (!on) {
      set(false);
      return;
    }
    const t = setTimeout(() => set(true), ms);
    return () => clearTimeout(t);
  }, [on, ms]);
  return v;
}
