// One way to ask for a breakdown: a named endpoint of the API, shaped into plain rows
// {value, cells: {metric: number}} that the panels and their details view render.
import { api, apiUrl } from './api.js';
import { apiParams } from './state.js';
import { COLUMNS } from './columns.js';

// `tab.endpoint` answers {[tab.key]: [{[tab.field]: value, ...metrics}]}.
export async function loadBreakdown(siteId, state, tab, { limit, offset = 0, q = '', metrics }) {
  if (tab.load) return tab.load(siteId, state, { limit, offset, q, metrics });
  const want = metrics || tab.metrics;
  const params = apiParams(state, { ...(tab.params || {}), limit, offset: offset || null, q, metrics: want.join(',') });
  const data = await api(`/sites/${encodeURIComponent(siteId)}/${tab.endpoint}`, { params });
  return (data[tab.key] || []).map((row) => ({
    value: row[tab.field],
    cells: Object.fromEntries(want.map((m) => [m, row[COLUMNS[m].field]])),
  }));
}

// The CSV of what `loadBreakdown` shows (every row, up to the API's 10,000), for a download
// link; null for a tab loaded another way (e.g. through POST /query).
export function breakdownCsvUrl(siteId, state, tab, { q = '', metrics }) {
  if (tab.load || tab.details || !tab.endpoint) return null;
  const want = metrics || tab.metrics;
  const params = apiParams(state, { ...(tab.params || {}), limit: 10000, q, metrics: want.join(','), format: 'csv' });
  return apiUrl(`/sites/${encodeURIComponent(siteId)}/${tab.endpoint}`, params);
}

// One or two dimensions through the general query (e.g. browser + version), one row per value
// or pair; the range, filters and segment are the URL's, in the query's spelling.
export async function loadPairs(siteId, state, dimensions, { limit, offset = 0, q = '', metrics }) {
  const params = apiParams(state);
  const body = {
    metrics,
    dimensions,
    date_range: params.get('start') ? [params.get('start'), params.get('end')] : params.get('period'),
    filters: params.getAll('filter').map(toQueryFilter),
    limit,
    offset,
  };
  if (params.get('date')) body.date = params.get('date');
  if (params.get('segment')) body.segment = params.get('segment');
  if (q) body.q = q;
  const data = await api(`/sites/${encodeURIComponent(siteId)}/query`, { method: 'POST', body });
  return data.results.map((r) => ({
    value: r.dimensions[0],
    pair: r.dimensions,
    cells: Object.fromEntries(metrics.map((m, i) => [m, r.metrics[i]])),
  }));
}

// The query-string filter operators (docs/api.md) and the query's names for them.
const OP_NAMES = {
  '==': 'is', '!=': 'is_not', '~': 'contains', '!~': 'not_contains', '~=': 'matches',
  '!~=': 'does_not_match', '*=': 'matches_wildcard', '!*=': 'does_not_match_wildcard',
};

function toQueryFilter(text) {
  const m = /^([a-z_]+|props:[^=!~*]+)(==|!=|!~=|!\*=|~=|\*=|!~|~)(.*)$/s.exec(text);
  if (!m) return ['is', text, []]; // not a filter: let the API name the problem
  const op = OP_NAMES[m[2]];
  // a regular expression is one value: its | is an alternation
  const values = op === 'matches' || op === 'does_not_match'
    ? [m[3]] : m[3].split(/(?<!\\)\|/).map((v) => v.replace(/\\\|/g, '|'));
  return [op, m[1], values];
}
