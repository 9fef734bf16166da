// /sites/{id}: the dashboard of one site. Every part reads the URL's state and asks the API.
import { useEffect, useLayoutEffect, useState } from 'preact/hooks';
import { html } from '../html.js';
import { api, useApi } from '../api.js';
import { apiParams, navigate, PERIODS, toSearch, useUrlState } from '../state.js';
import { Layout, ErrorBox } from '../layout.js';
import { Kpis } from '../kpis.js';
import { MainChart } from '../chart.js';
import { FilterChips, PeriodPicker, SegmentPicker } from '../toolbar.js';
import { ImportedToggle } from '../imported.js';
import { LiveCount, LiveView, useLive } from '../live.js';
import { Snippet } from '../snippet.js';
import { SourcesPanel } from '../panels/sources.js';
import { PagesPanel } from '../panels/pages.js';
import { LocationsPanel } from '../panels/locations.js';
import { DevicesPanel } from '../panels/devices.js';
import { LanguagesPanel } from '../panels/languages.js';
import { GoalsPanel } from '../panels/goals.js';
import { EventsPanel } from '../panels/events.js';
import { FunnelsPanel } from '../panels/funnels.js';
import { config } from '../config.js';
import { ShareLayout, ShareLiveCount, useShareLive } from '../share.js';

// A share link's page shows this dashboard read-only: no settings, no site switcher, no live
// event list (only how many visitors are on the site now), no funnels.
const shared = config.share;
const Frame = shared ? ShareLayout : Layout;

export function Dashboard({ siteId }) {
  const state = useUrlState();
  const siteReq = useApi(shared ? null : `/sites/${encodeURIComponent(siteId)}`, null, siteId);
  const [stats, setStats] = useState({ data: null, error: null });
  const [liveOpen, setLiveOpen] = useState(false);
  const live = (shared ? useShareLive : useLive)(siteId);
  const query = apiParams(state).toString();

  useLayoutEffect(() => {
    let on = true;
    // `imported` always: the answer says whether the site has imported data (for the toggle)
    api(`/sites/${encodeURIComponent(siteId)}/stats`, {
      params: apiParams(state, { imported: state.imported ? 'true' : 'false', compare: state.compare || 'previous_period' }),
    }).then(
      (data) => on && setStats({ data, error: null, for: query, compare: state.compare }),
      (error) => on && setStats({ data: null, error, for: query, compare: state.compare }),
    );
    return () => {
      on = false;
    };
  }, [siteId, query, state.compare]);

  useEffect(() => {
    // One spelling per state: a bookmarked URL reads the same as the one the page would write.
    if (location.search !== toSearch(state)) navigate(state, { replace: true });
  }, []);
  useKeyboard(state);
  const site = shared ? shared.site : siteReq.data;
  if (siteReq.error && !shared) return html`<${Layout}><${ErrorBox} error=${siteReq.error} what="this site" /></${Layout}>`;
  if (site) document.title = `${site.name || site.domain} · LittleStats`;

  const props = { siteId, state };
  const empty = stats.data && stats.data.visitors === 0 && stats.data.views === 0 && state.filters.length === 0;
  return html`
    <${Frame} site=${site} wide>
      <div class="dashboard" data-search=${toSearch(state)} data-query=${query}>
      <div class="toolbar">
        <h1 class="site-title">${site ? site.name || site.domain : '\u00a0'}</h1>
        ${shared ? html`<${ShareLiveCount} live=${live} />` : html`
          <${LiveCount} live=${live} onOpen=${() => setLiveOpen(true)} />
          ${site && site.role !== 'viewer' && html`<a class="settings-link" href=${`/sites/${encodeURIComponent(siteId)}/settings`}>Site settings</a>`}`}
      </div>
      <div class="controls">
        <${PeriodPicker} state=${state} period=${stats.data && stats.data.period} />
        <${FilterChips} state=${state} />
        ${!shared && html`<${SegmentPicker} siteId=${siteId} state=${state} canSave=${site && site.role !== 'viewer'} />`}
        <${ImportedToggle} state=${state} imported=${stats.data && stats.data.imported} />
      </div>
      ${empty && site && !shared && html`<${NoData} site=${site} />`}
      <section class="overview" aria-label="Overview">
        <${Kpis} stats=${stats.data} error=${stats.error} state=${state} loadedFor=${stats.for} ready=${stats.for === query && stats.compare === state.compare} />
        <${MainChart} ...${props} />
      </section>
      <div class="panels">
        <${SourcesPanel} ...${props} />
        <${PagesPanel} ...${props} />
        <${LocationsPanel} ...${props} />
        <${DevicesPanel} ...${props} />
        <${LanguagesPanel} ...${props} />
        <${GoalsPanel} ...${props} />
        <${EventsPanel} ...${props} />
        ${!shared && html`<${FunnelsPanel} ...${props} site=${site} />`}
      </div>
      ${liveOpen && !shared && html`<${LiveView} live=${live} onClose=${() => setLiveOpen(false)} />`}
      </div>
    </${Frame}>`;
}

function NoData({ site }) {
  const health = useApi(`/health/${encodeURIComponent(site.id)}`, null, site.id);
  const last = health.data && health.data.lastEventAt;
  return html`
    <div class="notice" role="status" data-empty>
      <h2>${last ? 'No visitors in this period' : 'No data yet'}</h2>
      ${last
        ? html`<p>The last event arrived ${new Date(last).toLocaleString()}. Pick a longer period, or check that the tracker is still on your pages.</p>`
        : html`
          <p>Nothing has arrived for <strong>${site.domain}</strong> yet. To check the tracker:</p>
          <ol>
            <li>Make sure the snippet below is on your pages, then open one in a browser (not from <code>localhost</code>: the tracker ignores it unless <code>data-allow-localhost</code> is set).</li>
            <li>Open the <strong>Live</strong> view above: your visit shows within a second.</li>
            <li>Still nothing? Check the browser console for a blocked request, and that <code>${site.domain}</code> is in the site's allowed hostnames.</li>
          </ol>
          <${Snippet} site=${site} />`}
    </div>`;
}

// Keys: the period picker's letters (d today, w 7 days, t 30 days, m month …), c compare,
// Escape clears the filters. Ignored while typing in a field.
function useKeyboard(state) {
  useEffect(() => {
    const onKey = (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.target;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
      if (document.querySelector('dialog[open]')) return;
      const period = PERIODS.find((p) => p.key === e.key && p.id !== 'custom');
      if (period) navigate({ ...state, period: period.id, start: null, end: null, date: null });
      else if (e.key === 'x') navigate({ ...state, compare: state.compare ? '' : 'previous_period' });
      else if (e.key === 'Escape' && state.filters.length) navigate({ ...state, filters: [] });
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, [state]);
}
