// A uPlot time-series chart (x in seconds) that follows its container's
// width and the theme, with an optional stacked mode.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { seriesColor } from './ui';

export interface ChartSeries {
  label: string;
  values: (number | null)[];
  color?: string;
}

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

function hasIsolated(v: (number | null)[]): boolean {
  return v.some((x, i) => x !== null && (i === 0 || v[i - 1] === null) && (i === v.length - 1 || v[i + 1] === null));
}

export function TimeChart({
  x,
  series,
  height = 260,
  stacked = false,
  bars = false,
  yFormat,
  testId,
}: {
  x: number[];
  series: ChartSeries[];
  height?: number;
  stacked?: boolean;
  bars?: boolean;
  yFormat?: (v: number) => string;
  testId?: string;
}) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const host = el.current;
    if (!host) return;
    let ys = series.map((s) => s.values);
    if (stacked) {
      const acc = new Array<number>(x.length).fill(0);
      ys = series.map((s) => s.values.map((v, i) => (acc[i] += v ?? 0)));
    }
    const fg = cssVar('--fg-muted');
    const grid = cssVar('--border');
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const opts: uPlot.Options = {
      width: host.clientWidth || 600,
      height,
      legend: { show: series.length <= 12 },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: [axis, { ...axis, size: 72, values: yFormat ? (_u, vals) => vals.map((v) => yFormat(v)) : undefined }],
      series: [
        {},
        ...series.map((s, i) => {
          const color = s.color ?? seriesColor(i);
          return {
            label: s.label,
            stroke: color,
            width: bars ? 0 : 1.5,
            fill: stacked || bars ? color + (bars ? 'cc' : '55') : undefined,
            // Points only where a value stands alone between gaps (a line would not show it).
            points: { show: hasIsolated(s.values), size: 5 },
            paths: bars ? uPlot.paths.bars!({ size: [0.9, 40], align: 1 }) : undefined,
            spanGaps: false,
          } as uPlot.Series;
        }),
      ],
      // Stacked: each series fills down to the one below it.
      bands: stacked ? series.slice(1).map((_, i) => ({ series: [i + 2, i + 1] as [number, number] })) : undefined,
    };
    const u = new uPlot(opts, [x, ...ys] as uPlot.AlignedData, host);
    const ro = new ResizeObserver(() => {
      const w = host.clientWidth;
      if (w && w !== u.width) u.setSize({ width: w, height });
    });
    ro.observe(host);
    return () => {
      ro.disconnect();
      u.destroy();
    };
  }, [x, series, height, stacked, bars]);
  return <div class="chart" ref={el} data-testid={testId} />;
}
