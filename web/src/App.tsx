import { useEffect, useMemo, useState } from 'preact/hooks';
import { onInflight } from './api';
import { TimePicker } from './components/TimePicker';
import { TimeContext } from './hooks';
import { href, onLinkClick, useRoute } from './route';
import { DEFAULT_RANGE, parseDuration, resolve, type Range } from './time';
import { ServicesPage, ServicePage } from './pages/Services';
import { TracesPage } from './pages/Traces';
import { TracePage } from './pages/Trace';
import { LogsPage } from './pages/Logs';
import { MetricsPage } from './pages/Metrics';
import { AlertsPage } from './pages/Alerts';
import { SlosPage } from './pages/Slos';

const NAV: [string, string][] = [
  ['/services', 'Services'],
  ['/traces', 'Traces'],
  ['/logs', 'Logs'],
  ['/explore', 'Metrics'],
  ['/alerts', 'Alerts'],
  ['/slos', 'SLOs'],
];

function useTheme(): [string, () => void] {
  const [theme, set] = useState(document.documentElement.dataset.theme ?? 'light');
  const toggle = () => {
    const t = theme === 'dark' ? 'light' : 'dark';
    document.documentElement.dataset.theme = t;
    try {
      localStorage.setItem('tern.theme', t);
    } catch {
      /* private mode */
    }
    set(t);
  };
  return [theme, toggle];
}

function ProgressBar() {
  const [n, set] = useState(0);
  useEffect(() => onInflight(set), []);
  return <div class={`progress ${n > 0 ? 'on' : ''}`} aria-hidden="true" />;
}

export function App() {
  const route = useRoute();
  const [theme, toggleTheme] = useTheme();
  const range: Range = {
    from: route.params.get('from') ?? DEFAULT_RANGE.from,
    to: route.params.get('to') ?? DEFAULT_RANGE.to,
  };
  const refresh = route.params.get('refresh') ?? '';
  const [tick, setTick] = useState(0);
  const resolved = useMemo(() => resolve(range), [range.from, range.to, tick]);
  useEffect(() => {
    const ms = parseDuration(refresh);
    if (!ms) return;
    const t = setInterval(() => setTick((x) => x + 1), Math.max(ms, 1000));
    return () => clearInterval(t);
  }, [refresh]);

  const path = route.path.replace(/\/+$/, '') || '/';
  let page;
  let m: RegExpMatchArray | null;
  if (path === '/' || path === '/services') page = <ServicesPage />;
  else if ((m = path.match(/^\/services\/(.+)$/))) page = <ServicePage service={decodeURIComponent(m[1])} />;
  else if (path === '/traces') page = <TracesPage />;
  else if ((m = path.match(/^\/traces\/([0-9a-fA-F]+)$/))) page = <TracePage id={m[1].toLowerCase()} />;
  else if (path === '/logs') page = <LogsPage />;
  else if (path === '/explore' || path === '/metrics') page = <MetricsPage />;
  else if (path === '/alerts') page = <AlertsPage />;
  else if (path === '/slos') page = <SlosPage />;
  else
    page = (
      <div class="page">
        <h1>Not found</h1>
        <p>
          There is no page at <code>{route.path}</code>. <a href={href('/services')}>Go to the services</a>.
        </p>
      </div>
    );
  const section = path === '/' ? '/services' : path === '/metrics' ? '/explore' : '/' + (path.split('/')[1] ?? '');

  return (
    <TimeContext.Provider value={{ range, resolved, tick }}>
      <div class="shell" onClick={onLinkClick}>
        <ProgressBar />
        <header class="topbar">
          <a class="brand" href={href('/services')}>
            tern
          </a>
          <nav>
            {NAV.map(([p, l]) => (
              <a href={href(p)} class={section === p ? 'active' : ''} data-testid={`nav-${l.toLowerCase()}`}>
                {l}
              </a>
            ))}
          </nav>
          <div class="spacer" />
          <TimePicker range={range} refresh={refresh} onRefresh={() => setTick((x) => x + 1)} />
          <button class="btn" onClick={toggleTheme} title="Switch theme" aria-label="Switch theme" data-testid="theme">
            {theme === 'dark' ? '☀' : '☾'}
          </button>
        </header>
        <main>{page}</main>
      </div>
    </TimeContext.Provider>
  );
}
