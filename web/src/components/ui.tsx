import type { ComponentChildren } from 'preact';
import { useDelayed } from '../hooks';

export function ErrorBox({ error, title }: { error: Error; title?: string }) {
  return (
    <div class="error-box" role="alert">
      <strong>{title ?? 'Error'}</strong>
      <span>{error.message}</span>
    </div>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="empty">{children}</div>;
}

export function Loading({ on, label }: { on: boolean; label?: string }) {
  const show = useDelayed(on);
  return show ? (
    <div class="loading" aria-busy="true">
      <span class="spinner" /> {label ?? 'Loading…'}
    </div>
  ) : null;
}

/** Error, loading and empty states around a fetched value. */
export function Status<T>({
  f,
  empty,
  isEmpty,
  children,
  what,
}: {
  f: { data: T | undefined; error: Error | undefined; loading: boolean };
  empty?: ComponentChildren;
  isEmpty?: (d: T) => boolean;
  children: (d: T) => ComponentChildren;
  what?: string;
}) {
  if (f.error) return <ErrorBox error={f.error} title={what ? `Could not load ${what}` : undefined} />;
  if (f.data === undefined) return <Loading on={f.loading} />;
  return (
    <>
      {f.loading && <Loading on label="Refreshing…" />}
      {isEmpty && isEmpty(f.data) ? <Empty>{empty ?? 'Nothing here.'}</Empty> : children(f.data)}
    </>
  );
}

/** A small inline SVG line chart. */
export function Sparkline({ values, width = 120, height = 28, color = 'var(--accent)' }: { values: number[]; width?: number; height?: number; color?: string }) {
  if (values.length < 2) return <svg class="spark" width={width} height={height} />;
  const max = Math.max(...values, 1e-12);
  const pts = values.map((v, i) => `${((i / (values.length - 1)) * width).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  return (
    <svg class="spark" width={width} height={height} viewBox={`0 0 ${width} ${height}`} aria-hidden="true">
      <polyline points={`0,${height} ${pts.join(' ')} ${width},${height}`} fill={color} fill-opacity="0.12" stroke="none" />
      <polyline points={pts.join(' ')} fill="none" stroke={color} stroke-width="1.5" />
    </svg>
  );
}

export function Attributes({ attrs, empty }: { attrs: Record<string, unknown>; empty?: string }) {
  const entries = Object.entries(attrs ?? {});
  if (!entries.length) return <div class="muted small">{empty ?? 'none'}</div>;
  return (
    <table class="kv">
      <tbody>
        {entries.map(([k, v]) => (
          <tr key={k}>
            <th>{k}</th>
            <td>{typeof v === 'string' ? v : JSON.stringify(v)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#edc948', '#76b7b2', '#ff9da7', '#9c755f', '#e15759', '#bab0ac'];
export function colorFor(key: string): string {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0;
  return PALETTE[Math.abs(h) % PALETTE.length];
}
export const seriesColor = (i: number) => PALETTE[i % PALETTE.length];
