// The dashboard's whole state lives in the query string, spelled as the API spells it:
//   ?period=30d&filter=country==DE&filter=page~blog&segment=Blog&compare=previous_period&metric=views
// so a URL can be bookmarked or sent, and the API answers the same question for it. `funnel` (the
// funnel the Funnels panel shows, by id) is the page's own, like `compare` and `metric`.
import { useEffect, useState } from 'preact/hooks';

export const PERIODS = [
  { id: 'today', label: 'Today', key: 'd' },
  { id: 'yesterday', label: 'Yesterday', key: 'e' },
  { id: '7d', label: 'Last 7 days', key: 'w' },
  { id: '30d', label: 'Last 30 days', key: 't' },
  { id: 'month', label: 'This month', key: 'm' },
  { id: 'last_month', label: 'Last month', key: 'l' },
  { id: '12mo', label: 'Last 12 months', key: 'y' },
  { id: 'custom', label: 'Custom range', key: 'c' },
];

// What the chart and the totals can compare with (the API's `compare`).
export const COMPARISONS = [
  { id: 'previous_period', label: 'Previous period' },
  { id: 'year_over_year', label: 'Same period last year' },
];

export function readState(search = location.search) {
  const p = new URLSearchParams(search);
  const start = p.get('start');
  const end = p.get('end');
  return {
    period: start && end ? 'custom' : p.get('period') || '30d',
    start: start && end ? start : null,
    end: start && end ? end : null,
    date: p.get('date'),
    filters: p.getAll('filter'),
    segment: p.get('segment') || '',
    compare: COMPARISONS.some((c) => c.id === p.get('compare')) ? p.get('compare') : '',
    metric: p.get('metric') || 'visitors',
    imported: p.get('imported') === 'true',
    funnel: p.get('funnel') || '',
  };
}

export function toSearch(state) {
  const p = new URLSearchParams();
  if (state.period === 'custom' && state.start && state.end) {
    p.set('start', state.start);
    p.set('end', state.end);
  } else if (state.period && state.period !== '30d') {
    p.set('period', state.period);
  }
  if (state.date && state.period !== 'custom') p.set('date', state.date);
  for (const f of state.filters) p.append('filter', f);
  if (state.segment) p.set('segment', state.segment);
  if (state.compare) p.set('compare', state.compare);
  if (state.metric && state.metric !== 'visitors') p.set('metric', state.metric);
  if (state.imported) p.set('imported', 'true');
  if (state.funnel) p.set('funnel', state.funnel);
  const s = p.toString();
  return s ? '?' + s : '';
}

// The parameters every stats endpoint takes, for this state.
export function apiParams(state, extra = {}) {
  const p = new URLSearchParams();
  if (state.period === 'custom' && state.start && state.end) {
    p.set('start', state.start);
    p.set('end', state.end);
  } else {
    p.set('period', state.period);
    if (state.date) p.set('date', state.date);
  }
  for (const f of state.filters) p.append('filter', f);
  if (state.segment) p.set('segment', state.segment);
  if (state.imported) p.set('imported', 'true');
  for (const [k, v] of Object.entries(extra)) if (v != null && v !== '') p.set(k, String(v));
  return p;
}

const listeners = new Set();

export function navigate(state, { replace = false } = {}) {
  const url = location.pathname + toSearch(state);
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  for (const fn of listeners) fn();
}

export function useUrlState() {
  const [search, setSearch] = useState(location.search);
  useEffect(() => {
    const update = () => setSearch(location.search);
    listeners.add(update);
    addEventListener('popstate', update);
    return () => {
      listeners.delete(update);
      removeEventListener('popstate', update);
    };
  }, []);
  return readState(search);
}

// --- filters: "dimension<op>value", ops as in the API ---------------------------------------

export const OPS = [
  { op: '==', label: 'is' },
  { op: '!=', label: 'is not' },
  { op: '~', label: 'contains' },
  { op: '!~', label: 'does not contain' },
  { op: '*=', label: 'matches pattern' },
  { op: '!*=', label: 'does not match pattern' },
  { op: '~=', label: 'matches regex' },
  { op: '!~=', label: 'does not match regex' },
];
// A regular expression is one value whose | is an alternation: never escaped.
const REGEX_OPS = ['~=', '!~='];

export const DIMENSION_LABELS = {
  page: 'Page', entry_page: 'Entry page', exit_page: 'Exit page', hostname: 'Hostname',
  source: 'Source', referrer: 'Referrer', referrer_domain: 'Referrer', utm_source: 'UTM source',
  utm_medium: 'UTM medium', utm_campaign: 'UTM campaign', utm_term: 'UTM term',
  utm_content: 'UTM content', country: 'Country', device: 'Device', browser: 'Browser',
  browser_version: 'Browser version', os: 'Operating system', os_version: 'OS version',
  language: 'Language', screen: 'Screen', event: 'Event', goal: 'Goal',
};

export function parseFilter(text) {
  const m = /^([a-z_]+|props:[^=!~*]+)(==|!=|!~=|!\*=|~=|\*=|!~|~)(.*)$/s.exec(text);
  if (!m) return null;
  return { dimension: m[1], op: m[2], value: REGEX_OPS.includes(m[2]) ? m[3] : m[3].replace(/\\\|/g, '|') };
}

export function formatFilter(dimension, op, value) {
  return `${dimension}${op}${REGEX_OPS.includes(op) ? String(value) : String(value).replace(/\|/g, '\\|')}`;
}

export function dimensionLabel(dimension) {
  if (dimension.startsWith('props:')) return `Property ${dimension.slice(6)}`;
  return DIMENSION_LABELS[dimension] || dimension;
}

// A state with `dimension is value` added; an existing filter on the same dimension is replaced.
export function withFilter(state, dimension, value, op = '==') {
  const others = state.filters.filter((f) => {
    const parsed = parseFilter(f);
    return !parsed || parsed.dimension !== dimension;
  });
  return { ...state, filters: [...others, formatFilter(dimension, op, value)] };
}

export function hasFilter(state, dimension) {
  return state.filters.some((f) => {
    const parsed = parseFilter(f);
    return parsed && parsed.dimension === dimension && parsed.op === '==';
  });
}

export function filterValue(state, dimension) {
  for (const f of state.filters) {
    const parsed = parseFilter(f);
    if (parsed && parsed.dimension === dimension && parsed.op === '==') return parsed.value;
  }
  return null;
}
