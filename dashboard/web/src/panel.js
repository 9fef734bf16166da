// A dashboard panel: tabs, the top 10 rows of the chosen tab with bars, and a "Details" view
// with search and paging. A click on a row filters the whole dashboard by its value.
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { breakdownCsvUrl, loadBreakdown } from './breakdown.js';
import { COLUMNS } from './columns.js';
import { apiParams, navigate, withFilter } from './state.js';

const TOP = 10;
const PAGE = 20;

// Under a goal filter a breakdown also says how each row converts (the API's conversion rate).
function withConversions(tab, state) {
  if (tab.load || !state.filters.some((f) => f.startsWith('goal=='))) return tab;
  const shown = tab.metrics.slice(0, tab.shown || 1);
  if (shown.includes('conversion_rate')) return tab;
  const detail = (tab.detailMetrics || tab.metrics).filter((m) => m !== 'conversion_rate');
  return { ...tab, metrics: [...shown, 'conversion_rate'], shown: shown.length + 1,
    detailMetrics: [...detail, 'conversion_rate'] };
}

export function Panel({ title, tabs, siteId, state, id, note }) {
  const [tabId, setTabId] = useState(tabs[0].id);
  const tab = withConversions(tabs.find((t) => t.id === tabId) || tabs[0], state);
  const [result, setResult] = useState({ rows: null, error: null });
  const [details, setDetails] = useState(false);
  // What the rows answer: the API query they were loaded for (tests wait for it to be current).
  const query = apiParams(state).toString();
  const loadedFor = `${query}#${tab.id}`;

  useLayoutEffect(() => {
    let live = true;
    loadBreakdown(siteId, state, tab, { limit: TOP }).then(
      (rows) => live && setResult({ rows, error: null, for: loadedFor }),
      (error) => live && setResult({ rows: null, error, for: loadedFor }),
    );
    return () => {
      live = false;
    };
  }, [siteId, query, tab.id]);

  const columns = tab.metrics.slice(0, tab.shown || 1);
  const rows = result.rows;
  const max = rows && rows.length ? Math.max(...rows.map((r) => Number(r.cells[columns[0]]) || 0), 1) : 1;

  return html`
    <section class="panel" id=${'panel-' + id} data-panel=${id} data-tab=${tab.id}
      data-for=${result.for ? result.for.split('#')[0] : ''} data-ready=${result.for === loadedFor ? 'true' : 'false'} aria-labelledby=${'h-' + id}>
      <header class="panel-head">
        <h2 id=${'h-' + id}>${title}</h2>
        ${tabs.length > 1 && html`
          <div class="tabs" role="group" aria-label=${title + ' views'}>
            ${tabs.map((t) => html`
              <button type="button" class="tab" aria-pressed=${t.id === tab.id ? 'true' : 'false'}
                data-tab-id=${t.id} onClick=${() => setTabId(t.id)}>${t.label}</button>`)}
          </div>`}
      </header>
      ${note}
      <div class="list-head" aria-hidden="true">
        <span>${tab.valueHeader || tab.label}</span>
        ${columns.map((c) => html`<span class="num">${COLUMNS[c].header}</span>`)}
      </div>
      ${result.error
        ? html`<p class="panel-error" role="alert">Could not load ${tab.label.toLowerCase()}: ${result.error.message}</p>`
        : !rows
          ? html`<div class="skeleton" aria-busy="true"><span></span><span></span><span></span></div>`
          : rows.length === 0
            ? html`<p class="panel-empty">${tab.empty || 'Nothing in this period.'}</p>`
            : html`
              <ol class="rows">
                ${rows.map((row) => html`<${Row} row=${row} tab=${tab} columns=${columns} max=${max}
                  state=${state} siteId=${siteId} />`)}
              </ol>`}
      ${rows && rows.length > 0 && !tab.noDetails && html`
        <footer class="panel-foot">
          <button type="button" class="link-button" onClick=${() => setDetails(true)}>Details</button>
        </footer>`}
      ${details && html`<${Details} title=${title} tab=${tab} siteId=${siteId} state=${state}
        onClose=${() => setDetails(false)} />`}
    </section>`;
}

function label(tab, value) {
  if (value == null) return tab.unknown || '(unknown)';
  return tab.label_of ? tab.label_of(value) : String(value);
}

function activate(tab, row, state) {
  if (tab.onRow) return tab.onRow(row, state);
  if (row.value == null || !tab.dimension) return undefined;
  return navigate(withFilter(state, tab.dimension, row.value));
}

function Row({ row, tab, columns, max, state }) {
  const first = Number(row.cells[columns[0]]) || 0;
  const clickable = row.value != null && (tab.dimension || tab.onRow);
  const text = label(tab, row.value);
  const body = html`
    <span class="bar" style=${{ width: `${(100 * first) / max}%` }}></span>
    <span class="label">${tab.icon ? html`<span class="icon" aria-hidden="true">${tab.icon(row.value)}</span>` : ''}${text}</span>
    ${columns.map((c) => html`<span class="num" data-metric=${c} data-value=${row.cells[c]}>${COLUMNS[c].format(row.cells[c])}</span>`)}`;
  return html`
    <li data-value=${row.value == null ? '' : String(row.value)}>
      ${clickable
        ? html`<button type="button" class="row" title=${tab.rowTitle ? tab.rowTitle(text) : `Filter by ${text}`}
            onClick=${() => activate(tab, row, state)}>${body}</button>`
        : html`<div class="row">${body}</div>`}
    </li>`;
}

function Details({ title, tab, siteId, state, onClose }) {
  const ref = useRef(null);
  const [q, setQ] = useState('');
  const [query, setQuery] = useState('');
  const [offset, setOffset] = useState(0);
  const [result, setResult] = useState({ rows: null, error: null });
  const metrics = tab.detailMetrics || tab.metrics;

  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
  }, []);
  useEffect(() => {
    const t = setTimeout(() => {
      setQuery(q);
      setOffset(0);
    }, 250);
    return () => clearTimeout(t);
  }, [q]);
  useEffect(() => {
    let live = true;
    const load = tab.details || loadBreakdown;
    const key = `${offset}:${query}`;
    load(siteId, state, tab, { limit: PAGE + 1, offset, q: query, metrics }).then(
      (rows) => live && setResult({ rows, error: null, for: key }),
      (error) => live && setResult({ rows: null, error, for: key }),
    );
    return () => {
      live = false;
    };
  }, [query, offset]);

  const rows = result.rows ? result.rows.slice(0, PAGE) : null;
  const csv = breakdownCsvUrl(siteId, state, tab, { q: query, metrics });
  const more = result.rows && result.rows.length > PAGE;
  const pick = (row) => {
    onClose();
    if (tab.onDetailRow) tab.onDetailRow(row, state);
    else activate(tab, row, state);
  };
  return html`
    <dialog ref=${ref} class="details" aria-labelledby="details-title" onClose=${onClose} data-loaded=${result.for || ''}>
      <header class="details-head">
        <h2 id="details-title">${title}: ${tab.detailsLabel || tab.label}</h2>
        <button type="button" class="icon-button" aria-label="Close" onClick=${onClose}>✕</button>
      </header>
      <input type="search" class="search" placeholder="Search" aria-label=${'Search ' + tab.label.toLowerCase()}
        value=${q} onInput=${(e) => setQ(e.currentTarget.value)} />
      <div class="table-wrap">
        ${result.error
          ? html`<p class="panel-error" role="alert">Could not load: ${result.error.message}</p>`
          : !rows
            ? html`<div class="skeleton" aria-busy="true"><span></span><span></span></div>`
            : rows.length === 0
              ? html`<p class="panel-empty">No ${tab.label.toLowerCase()} match.</p>`
              : html`
              <table class="data">
                <thead><tr><th scope="col">${tab.valueHeader || tab.label}</th>
                  ${metrics.map((m) => html`<th scope="col" class="num">${COLUMNS[m].header}</th>`)}</tr></thead>
                <tbody>
                  ${rows.map((row) => html`<tr>
                    <td>${row.value != null || row.pair
                      ? html`<button type="button" class="link-button" onClick=${() => pick(row)}>${tab.detailLabel ? tab.detailLabel(row) : label(tab, row.value)}</button>`
                      : label(tab, row.value)}</td>
                    ${metrics.map((m) => html`<td class="num" data-value=${row.cells[m]}>${COLUMNS[m].format(row.cells[m])}</td>`)}
                  </tr>`)}
                </tbody>
              </table>`}
      </div>
      <footer class="pager">
        <button type="button" class="button" disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>Previous</button>
        <span>${rows && rows.length ? `${offset + 1}–${offset + rows.length}` : ''}</span>
        <button type="button" class="button" disabled=${!more} onClick=${() => setOffset(offset + PAGE)}>Next</button>
        ${csv && html`<a class="csv-link" href=${csv} download>Download CSV</a>`}
      </footer>
    </dialog>`;
}
