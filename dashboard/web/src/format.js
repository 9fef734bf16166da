// Numbers, durations and dates in the browser's locale.
const number = new Intl.NumberFormat();
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const percent1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export const fmt = {
  number: (n) => (n == null ? '–' : number.format(n)),
  compact: (n) => (n == null ? '–' : Math.abs(n) >= 10000 ? compact.format(n) : number.format(n)),
  decimal: (n) => (n == null ? '–' : decimal.format(n)),
  money: (n) => (n == null ? '–' : money.format(n)),
  percent: (n) => (n == null ? '–' : percent1.format(n) + '%'),
  duration(seconds) {
    if (seconds == null) return '–';
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = s % 60;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${r}s`;
    return `${r}s`;
  },
};

// The metrics of the KPI row and the chart, spelled as the API spells them.
export const METRICS = [
  { id: 'visitors', field: 'visitors', label: 'Unique visitors', short: 'Visitors', format: fmt.compact, exact: fmt.number },
  { id: 'visits', field: 'visits', label: 'Total visits', short: 'Visits', format: fmt.compact, exact: fmt.number },
  { id: 'views', field: 'views', label: 'Total pageviews', short: 'Views', format: fmt.compact, exact: fmt.number },
  { id: 'views_per_visit', field: 'viewsPerVisit', label: 'Views per visit', short: 'Views / visit', format: fmt.decimal },
  { id: 'bounce_rate', field: 'bounceRate', label: 'Bounce rate', short: 'Bounce', format: fmt.percent, lowerIsBetter: true },
  { id: 'visit_duration', field: 'avgDuration', label: 'Visit duration', short: 'Duration', format: fmt.duration },
];

export function metric(id) {
  return METRICS.find((m) => m.id === id) || METRICS[0];
}

const regionNames = (() => {
  try {
    return new Intl.DisplayNames(undefined, { type: 'region' });
  } catch {
    return null;
  }
})();
const languageNames = (() => {
  try {
    return new Intl.DisplayNames(undefined, { type: 'language' });
  } catch {
    return null;
  }
})();

export function countryName(code) {
  if (!code) return null;
  try {
    return (regionNames && regionNames.of(code)) || code;
  } catch {
    return code;
  }
}

export function flag(code) {
  if (!code || !/^[A-Z]{2}$/.test(code)) return '';
  return String.fromCodePoint(...[...code].map((c) => 0x1f1a5 + c.charCodeAt(0)));
}

export function languageName(tag) {
  if (!tag) return null;
  try {
    return (languageNames && languageNames.of(tag)) || tag;
  } catch {
    return tag;
  }
}

// "2026-12-01" or "2026-12-01T13:00:00+01:00" → a label for the chart's axis or tooltip.
export function bucketLabel(ts, granularity, long = false) {
  const local = ts.length <= 10 ? ts + 'T00:00:00' : ts.slice(0, 19);
  const d = new Date(local);
  if (granularity === 'hour') {
    return new Intl.DateTimeFormat(undefined, long ? { weekday: 'short', day: 'numeric', month: 'short', hour: 'numeric' } : { hour: 'numeric' }).format(d);
  }
  if (granularity === 'month') {
    return new Intl.DateTimeFormat(undefined, { month: long ? 'long' : 'short', year: 'numeric' }).format(d);
  }
  const prefix = granularity === 'week' && long ? 'Week of ' : '';
  return prefix + new Intl.DateTimeFormat(undefined, long ? { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' } : { day: 'numeric', month: 'short' }).format(d);
}

export function dateRange(period) {
  if (!period) return '';
  const start = new Date(period.start.slice(0, 19));
  const end = new Date(new Date(period.end.slice(0, 19)).getTime() - 1);
  const f = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
  const a = f.format(start);
  const b = f.format(end);
  return a === b ? a : `${a} – ${b}`;
}

export function timeAgo(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  if (s < 60) return rtf.format(-s, 'second');
  if (s < 3600) return rtf.format(-Math.round(s / 60), 'minute');
  return rtf.format(-Math.round(s / 3600), 'hour');
}
