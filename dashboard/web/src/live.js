// Real time: "N visitors now", kept current from the SSE feed, and a live view with the latest
// events and the top pages now. The stream needs a short-lived stream token (EventSource cannot
// send headers): POST /api/v2/realtime/{site}/token, then EventSource(url).
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { api } from './api.js';
import { countryName, fmt, timeAgo } from './format.js';

const KEEP = 30;

export function useLive(siteId) {
  const [live, setLive] = useState({ stats: null, events: [], connected: false, error: null });
  useEffect(() => {
    let source = null;
    let stopped = false;
    let retry = null;
    const site = encodeURIComponent(siteId);
    async function connect() {
      try {
        const grant = await api(`/realtime/${site}/token`, { method: 'POST' });
        if (stopped) return;
        source = new EventSource(grant.url);
      } catch (error) {
        if (!stopped) {
          setLive((l) => ({ ...l, connected: false, error }));
          retry = setTimeout(connect, 10000);
        }
        return;
      }
      source.addEventListener('open', () => setLive((l) => ({ ...l, connected: true, error: null })));
      source.addEventListener('stats_update', (e) => {
        const msg = JSON.parse(e.data);
        setLive((l) => ({ ...l, stats: msg.stats || msg }));
      });
      source.addEventListener('event', (e) => {
        const msg = JSON.parse(e.data);
        setLive((l) => ({ ...l, events: [msg.event || msg, ...l.events].slice(0, KEEP) }));
      });
      source.addEventListener('error', () => {
        // EventSource reconnects by itself; once closed (an expired token) mint a new one.
        if (source.readyState === EventSource.CLOSED && !stopped) {
          setLive((l) => ({ ...l, connected: false }));
          retry = setTimeout(connect, 3000);
        }
      });
    }
    connect();
    const stats = setInterval(() => setLive((l) => ({ ...l })), 15000); // keeps "x seconds ago" fresh
    return () => {
      stopped = true;
      clearTimeout(retry);
      clearInterval(stats);
      if (source) source.close();
    };
  }, [siteId]);
  return live;
}

export function LiveCount({ live, onOpen }) {
  const n = live.stats ? live.stats.activeVisitors : null;
  return html`
    <button type="button" class="live-count" onClick=${onOpen} data-active=${n == null ? '' : n}
      aria-label=${n == null ? 'Live view' : `${n} visitors now; open the live view`}>
      <span class=${'pulse' + (live.connected ? ' on' : '')} aria-hidden="true"></span>
      ${n == null ? 'Live' : html`<strong>${fmt.number(n)}</strong> ${n === 1 ? 'visitor' : 'visitors'} now`}
    </button>`;
}

export function LiveView({ live, onClose }) {
  const ref = useRef(null);
  useEffect(() => {
    if (ref.current && !ref.current.open) ref.current.showModal();
  }, []);
  const s = live.stats;
  return html`
    <dialog ref=${ref} class="details live-view" aria-labelledby="live-title" onClose=${onClose}>
      <header class="details-head">
        <h2 id="live-title">Live</h2>
        <button type="button" class="icon-button" aria-label="Close" onClick=${onClose}>✕</button>
      </header>
      ${!s ? html`<p class="panel-empty">${live.error ? `The live feed is not available: ${live.error.message}` : 'Connecting…'}</p>` : html`
        <div class="live-kpis">
          <div><span class="kpi-label">Visitors now</span><span class="kpi-value" data-live-active>${fmt.number(s.activeVisitors)}</span><small>last 5 minutes</small></div>
          <div><span class="kpi-label">Views this hour</span><span class="kpi-value">${fmt.number(s.hour.views)}</span></div>
          <div><span class="kpi-label">Views last minute</span><span class="kpi-value">${fmt.number(s.lastMinute.views)}</span></div>
        </div>
        <div class="live-grid">
          <section>
            <h3>Top pages now</h3>
            ${s.topPages.length ? html`<ol class="plain">${s.topPages.map((p) => html`<li><span>${p.page}</span><span class="num">${fmt.number(p.visitors)}</span></li>`)}</ol>`
              : html`<p class="panel-empty">No pageviews in the last 30 minutes.</p>`}
          </section>
          <section>
            <h3>Latest events</h3>
            ${live.events.length ? html`<ol class="plain events-feed">${live.events.map((e) => html`
              <li><span>${e.type === 'event' ? html`<strong>${e.name}</strong> on ` : ''}${e.page}
                <small>${countryName(e.country) || ''} · ${e.device || ''} · ${e.browser || ''}</small></span>
                <time datetime=${e.time}>${timeAgo(e.time)}</time></li>`)}</ol>`
              : html`<p class="panel-empty">Waiting for the next event…</p>`}
          </section>
        </div>`}
    </dialog>`;
}
