// /: the user's sites, each with its visitors today and a 7-day sparkline; "Add a site".
import uPlot from 'uplot';
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from '../html.js';
import { api, useApi } from '../api.js';
import { Layout, ErrorBox } from '../layout.js';
import { Snippet } from '../snippet.js';
import { fmt } from '../format.js';

export function Sites() {
  const [version, setVersion] = useState(0);
  const sites = useApi('/sites', null, version);
  const [adding, setAdding] = useState(false);
  const [added, setAdded] = useState(null);
  document.title = 'Sites · LittleStats';
  const list = sites.data ? sites.data.sites : null;
  return html`
    <${Layout}>
      <div class="page-head">
        <h1>Your sites</h1>
        ${list && list.length > 0 && !adding && html`<button type="button" class="button primary" onClick=${() => setAdding(true)}>Add a site</button>`}
      </div>
      ${sites.error && html`<${ErrorBox} error=${sites.error} what="your sites" />`}
      ${added && html`<div class="notice" role="status"><h2>${added.domain} is ready</h2><${Snippet} site=${added} />
        <p><a href=${`/sites/${encodeURIComponent(added.id)}`}>Open its dashboard</a></p></div>`}
      ${list && (adding || list.length === 0) && !added && html`
        <${AddSite} first=${list.length === 0} onCancel=${list.length ? () => setAdding(false) : null}
          onAdded=${(site) => { setAdded(site); setAdding(false); setVersion(version + 1); }} />`}
      ${list && list.length > 0 && html`
        <ul class="site-list">${list.map((s) => html`<${SiteCard} key=${s.id} site=${s} />`)}</ul>`}
      ${!list && !sites.error && html`<div class="skeleton" aria-busy="true"><span></span><span></span></div>`}
    </${Layout}>`;
}

function SiteCard({ site }) {
  const id = encodeURIComponent(site.id);
  const today = useApi(`/sites/${id}/stats`, new URLSearchParams({ period: 'today', metrics: 'visitors' }), site.id);
  const week = useApi(`/sites/${id}/timeseries`, new URLSearchParams({ period: '7d', metrics: 'visitors' }), site.id);
  return html`
    <li class="site-card" data-site=${site.id}>
      <a href=${`/sites/${id}`} class="site-link">
        <span class="site-name">${site.name || site.domain}</span>
        <span class="site-domain">${site.domain}</span>
      </a>
      <div class="site-today">
        <span class="kpi-value" data-value=${today.data ? today.data.visitors : ''}>${today.data ? fmt.compact(today.data.visitors) : today.error ? '–' : '\u00a0'}</span>
        <span class="kpi-label">visitors today</span>
      </div>
      ${week.data ? html`<${Sparkline} points=${week.data.data.map((d) => d.visitors)} label=${`Visitors over the last 7 days: ${week.data.data.map((d) => d.visitors).join(', ')}`} />`
        : html`<div class="sparkline"></div>`}
    </li>`;
}

function Sparkline({ points, label }) {
  const ref = useRef(null);
  useEffect(() => {
    const accent = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim();
    const fill = getComputedStyle(document.documentElement).getPropertyValue('--accent-fill').trim();
    const plot = new uPlot({
      width: 160, height: 40, padding: [4, 0, 4, 0],
      cursor: { show: false }, legend: { show: false }, select: { show: false },
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: accent, fill, width: 2, points: { show: false } }],
    }, [points.map((_, i) => i), points], ref.current);
    return () => plot.destroy();
  }, [points.join(',')]);
  return html`<div class="sparkline" role="img" aria-label=${label} ref=${ref}></div>`;
}

function AddSite({ first, onAdded, onCancel }) {
  const [domain, setDomain] = useState('');
  const [name, setName] = useState('');
  const [error, setError] = useState(null);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const site = await api('/sites', { method: 'POST', body: { domain: domain.trim(), name: name.trim() || undefined, timezone: zone } });
      onAdded(site);
    } catch (err) {
      setError(err);
    }
  };
  return html`
    <form class="card form" onSubmit=${submit} aria-labelledby="add-site-title">
      <h2 id="add-site-title">${first ? 'Add your first site' : 'Add a site'}</h2>
      ${first && html`<p>LittleStats counts visits without cookies. Add the domain of your site, then put the snippet it shows you on your pages.</p>`}
      <label>Domain <input class="input" required placeholder="example.com" value=${domain} onInput=${(e) => setDomain(e.currentTarget.value)} /></label>
      <label>Name (optional) <input class="input" placeholder="My blog" value=${name} onInput=${(e) => setName(e.currentTarget.value)} /></label>
      <p class="hint">Time zone: ${zone} (change it later in the site's settings).</p>
      ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
      <div class="actions">
        <button type="submit" class="button primary">Add site</button>
        ${onCancel && html`<button type="button" class="button" onClick=${onCancel}>Cancel</button>`}
      </div>
    </form>`;
}
