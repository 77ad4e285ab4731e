// URL state: the path picks the page, the query string holds the page's
// inputs and the global time range (`from`, `to`) and auto-refresh
// (`refresh`), so every view is a shareable link.
import { useEffect, useState } from 'preact/hooks';

export interface Route {
  path: string;
  params: URLSearchParams;
}

const listeners = new Set<() => void>();
const current = (): Route => ({ path: location.pathname, params: new URLSearchParams(location.search) });
window.addEventListener('popstate', () => listeners.forEach((f) => f()));

export function useRoute(): Route {
  const [r, set] = useState(current);
  useEffect(() => {
    const f = () => set(current());
    listeners.add(f);
    return () => void listeners.delete(f);
  }, []);
  return r;
}

/** Parameters that follow the user from page to page. */
const GLOBAL = ['from', 'to', 'refresh'];

/** A link to `path` with `params`, keeping the global parameters. */
export function href(path: string, params: Record<string, string | undefined | string[]> = {}, keepGlobal = true): string {
  const cur = new URLSearchParams(location.search);
  const u = new URLSearchParams();
  if (keepGlobal) for (const k of GLOBAL) if (cur.has(k) && !(k in params)) u.set(k, cur.get(k)!);
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x));
    else u.set(k, v);
  }
  const s = u.toString();
  return s ? `${path}?${s}` : path;
}

export function navigate(to: string, replace = false) {
  if (to === location.pathname + location.search) return;
  if (replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  listeners.forEach((f) => f());
  if (!replace) window.scrollTo(0, 0);
}

/** Sets some query parameters of the current URL (undefined removes one). */
export function setParams(p: Record<string, string | undefined | string[]>, replace = false) {
  const u = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(p)) {
    u.delete(k);
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x));
    else if (v !== undefined && v !== '') u.set(k, v);
  }
  const s = u.toString();
  navigate(location.pathname + (s ? `?${s}` : ''), replace);
}

/** Intercepts clicks on in-app links (plain left clicks only). */
export function onLinkClick(e: MouseEvent) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element).closest?.('a');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
}
