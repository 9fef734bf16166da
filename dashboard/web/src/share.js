// A share link's page (/share/{slug}): the frame of the read-only dashboard and its live count.
// The server puts `share` into the page's configuration: the share's API base, the site, and
// whether ?embed=true asked for the compact frame (no header: the embedding page has its own).
import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { api } from './api.js';
import { config } from './config.js';
import { fmt } from './format.js';

const POLL_MS = 15000;

export function ShareLayout({ site, children }) {
  const embed = config.share && config.share.embed;
  if (embed) {
    return html`<main id="main" class="content wide embed" data-shared="embed">${children}</main>`;
  }
  return html`
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <div class="top-inner wide">
        <span class="brand"><span class="logo" aria-hidden="true"></span>${site ? site.name || site.domain : 'LittleStats'}</span>
        <span class="top-nav share-note">Shared read-only · LittleStats</span>
      </div>
    </header>
    <main id="main" class="content wide" data-shared="page">${children}</main>`;
}

// How many visitors are on the site now, asked again every 15 s (a share sees no live events).
export function useShareLive() {
  const [live, setLive] = useState({ stats: null, connected: false, error: null });
  useEffect(() => {
    let stopped = false;
    let timer = null;
    async function poll() {
      try {
        const stats = await api('/live');
        if (!stopped) setLive({ stats, connected: true, error: null });
      } catch (error) {
        if (!stopped) setLive((l) => ({ ...l, connected: false, error }));
      }
      if (!stopped) timer = setTimeout(poll, POLL_MS);
    }
    poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  return live;
}

export function ShareLiveCount({ live }) {
  const n = live.stats ? live.stats.activeVisitors : null;
  return html`
    <span class="live-count" data-active=${n == null ? '' : n} role="status">
      <span class=${'pulse' + (live.connected ? ' on' : '')} aria-hidden="true"></span>
      ${n == null ? 'Live' : html`<strong>${fmt.number(n)}</strong> ${n === 1 ? 'visitor' : 'visitors'} now`}
    </span>`;
}
