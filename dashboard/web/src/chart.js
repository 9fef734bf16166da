// The main chart: the chosen metric over the period (uPlot), the previous period drawn behind it
// when comparing; the legend under it shows the exact values of the bucket under the pointer.
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

const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);

// The period of equal length just before `period` ({start, end} local ISO, end exclusive), as an
// inclusive range of dates — the same "previous period" the API's /stats compares with.
export function previousRange(period) {
  const start = Date.parse(period.start.slice(0, 10));
  const end = Date.parse(period.end.slice(0, 10));
  const days = Math.max(1, Math.round((end - start) / DAY));
  return { start: isoDay(start - days * DAY), end: isoDay(start - DAY) };
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
    const params = apiParams(state, { granularity, metrics: m.id });
    api(site, { params })
      .then(async (data) => {
        let previous = null;
        if (state.compare) {
          const prev = previousRange(data.period);
          const p = apiParams({ ...state, period: 'custom', start: prev.start, end: prev.end, date: null }, { granularity, metrics: m.id });
          previous = await api(site, { params: p });
        }
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
      ${series.data ? html`<${Plot} data=${series.data} previous=${series.previous} metric=${m} granularity=${granularity} />`
        : html`<div class="chart-loading" aria-busy="true"></div>`}
    </figure>`;
}

function Plot({ data, previous, metric, granularity }) {
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
        label: 'Previous period', stroke: muted, width: 1.5, dash: [4, 4], points: { show: false },
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
  }, [data, previous, metric.id, dark]);

  return html`<div class="plot" ref=${ref}></div>`;
}
