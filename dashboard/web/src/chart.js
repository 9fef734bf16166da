// The main chart: the chosen metric over the period (uPlot), the comparison period (the API's
// `compare`: previous period or last year) drawn behind it; the legend under it shows the exact
// values of the bucket under the pointer.
import uPlot from 'uplot';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { api } from './api.js';
import { apiParams, toSearch } from './state.js';
import { bucketLabel, metric as metricOf } from './format.js';

const DAY = 86400000;

export function granularityFor(state) {
  if (state.period === 'today' || state.period === 'yesterday') return 'hour';
  if (state.period === '12mo') return 'month';
  if (state.period === 'custom' && state.start && state.end) {
    const days = (Date.parse(state.end.slice(0, 10)) - Date.parse(state.start.slice(0, 10))) / DAY + 1;
    if (days <= 1) return 'hour';
    if (days <= 92) return 'day';
    if (days <= 366) return 'week';
    return 'month';
  }
  return 'day';
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function MainChart({ siteId, state }) {
  const granularity = granularityFor(state);
  const m = metricOf(state.metric);
  const [series, setSeries] = useState({ data: null, previous: null, error: null });
  // What the chart shows: the dashboard's whole URL state (tests wait for it to be current).
  const key = toSearch(state);

  useLayoutEffect(() => {
    let live = true;
    const site = `/sites/${encodeURIComponent(siteId)}/timeseries`;
    const params = apiParams(state, { granularity, metrics: m.id, compare: state.compare || null });
    api(site, { params })
      .then((data) => {
        // The comparison's buckets, aligned by position with this period's (the API's `compare`).
        const previous = state.compare ? {
          data: data.data.map((p) => (p.comparison && p.comparison.timestamp
            ? { timestamp: p.comparison.timestamp, [m.field]: p.comparison[m.field] } : null)),
        } : null;
        if (live) setSeries({ data, previous, error: null, for: key });
      })
      .catch((error) => live && setSeries({ data: null, previous: null, error, for: key }));
    return () => {
      live = false;
    };
  }, [siteId, key]);

  const ready = series.for === key ? 'true' : 'false';
  if (series.error) {
    return html`<div class="chart panel-error" role="alert" data-for-search=${series.for} data-ready=${ready}>Could not load the chart: ${series.error.message}</div>`;
  }
  return html`
    <figure class="chart" data-for-search=${series.for || ''} data-ready=${ready} data-metric=${m.id}>
      <figcaption class="sr-only">${m.label} by ${granularity}</figcaption>
      ${series.data ? html`<${Plot} data=${series.data} previous=${series.previous} metric=${m} granularity=${granularity}
        previousLabel=${state.compare === 'year_over_year' ? 'Last year' : 'Previous period'} />`
        : html`<div class="chart-loading" aria-busy="true"></div>`}
    </figure>`;
}

function Plot({ data, previous, metric, granularity, previousLabel }) {
  const ref = useRef(null);
  const [dark, setDark] = useState(() => matchMedia('(prefers-color-scheme: dark)').matches);
  useEffect(() => {
    const mq = matchMedia('(prefers-color-scheme: dark)');
    const on = () => setDark(mq.matches);
    mq.addEventListener('change', on);
    return () => mq.removeEventListener('change', on);
  }, []);

  useEffect(() => {
    const el = ref.current;
    const rows = data.data;
    const xs = rows.map((_, i) => i);
    const ys = rows.map((r) => r[metric.field] ?? null);
    const prevRows = previous ? previous.data : null;
    const prevYs = prevRows ? xs.map((i) => (prevRows[i] ? prevRows[i][metric.field] ?? null : null)) : null;
    const accent = cssVar('--accent');
    const muted = cssVar('--muted');
    const grid = cssVar('--grid');
    const fill = cssVar('--accent-fill');
    const exact = metric.exact || metric.format;
    const label = (i) => (rows[i] ? bucketLabel(rows[i].timestamp, granularity, true) : '');
    const series = [
      { label: 'Time', value: (u, i) => (i == null ? '' : label(i)) },
    ];
    const values = [xs];
    if (prevYs) {
      series.push({
        label: previousLabel, stroke: muted, width: 1.5, dash: [4, 4], points: { show: false },
        value: (u, v, si, i) => (v == null ? '–' : `${exact(v)}${prevRows[i] ? ' (' + bucketLabel(prevRows[i].timestamp, granularity, true) + ')' : ''}`),
      });
      values.push(prevYs);
    }
    series.push({ label: metric.label, stroke: accent, width: 2.5, fill, points: { show: rows.length < 40, size: 5 }, value: (u, v) => (v == null ? '–' : exact(v)) });
    values.push(ys);
    const opts = {
      width: el.clientWidth || 600,
      height: 260,
      padding: [12, 24, 0, 0],
      cursor: { points: { size: 8 }, drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: muted, grid: { show: false }, ticks: { show: false }, space: 40,
          splits: (u) => {
            const every = Math.max(1, Math.ceil(rows.length / Math.max(2, Math.floor(u.bbox.width / devicePixelRatio / 80))));
            return xs.filter((i) => i % every === 0);
          },
          values: (u, splits) => splits.map((i) => (rows[i] ? bucketLabel(rows[i].timestamp, granularity) : '')) },
        { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { show: false }, size: 56,
          values: (u, splits) => splits.map((v) => metric.format(v)) },
      ],
      series,
    };
    const plot = new uPlot(opts, values, el);
    const ro = new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: 260 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [data, previous, metric.id, dark, previousLabel]);

  return html`<div class="plot" ref=${ref}></div>`;
}
