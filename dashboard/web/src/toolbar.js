// The period picker, the comparison choice, the filter chips and the saved segments.
import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { api } from './api.js';
import { COMPARISONS, OPS, PERIODS, dimensionLabel, formatFilter, navigate, parseFilter } from './state.js';
import { dateRange } from './format.js';

export function PeriodPicker({ state, period }) {
  const [custom, setCustom] = useState(state.period === 'custom');
  const [start, setStart] = useState(state.start || '');
  const [end, setEnd] = useState(state.end || '');
  useEffect(() => {
    setCustom(state.period === 'custom');
    setStart(state.start || (period ? period.start.slice(0, 10) : ''));
    setEnd(state.end || '');
  }, [state.period, state.start, state.end]);

  const choose = (id) => {
    if (id === 'custom') return setCustom(true);
    setCustom(false);
    return navigate({ ...state, period: id, start: null, end: null, date: null });
  };
  const apply = (e) => {
    e.preventDefault();
    if (start && end && start <= end) navigate({ ...state, period: 'custom', start, end, date: null });
  };
  const selected = custom ? 'custom' : state.period;
  return html`
    <div class="period">
      <label class="sr-only" for="period-select">Period</label>
      <select id="period-select" class="select" value=${selected} onChange=${(e) => choose(e.currentTarget.value)}>
        ${PERIODS.map((p) => html`<option value=${p.id}>${p.label}</option>`)}
      </select>
      ${custom && html`
        <form class="custom-range" onSubmit=${apply}>
          <label>From <input type="date" required value=${start} max=${end || undefined} onInput=${(e) => setStart(e.currentTarget.value)} /></label>
          <label>to <input type="date" required value=${end} min=${start || undefined} onInput=${(e) => setEnd(e.currentTarget.value)} /></label>
          <button type="submit" class="button">Apply</button>
        </form>`}
      <span class="range-text" data-range>${dateRange(period)}</span>
      <label class="sr-only" for="compare-select">Compare with</label>
      <select id="compare-select" class="select" value=${state.compare} onChange=${(e) => navigate({ ...state, compare: e.currentTarget.value })}>
        <option value="">No comparison</option>
        ${COMPARISONS.map((c) => html`<option value=${c.id}>Compare: ${c.label.toLowerCase()}</option>`)}
      </select>
    </div>`;
}

export function FilterChips({ state }) {
  if (!state.filters.length && !state.segment) return null;
  return html`
    <div class="chips" aria-label="Filters">
      ${state.segment && html`
        <span class="chip" data-segment=${state.segment}>
          <span class="chip-text">Segment <strong>${state.segment}</strong></span>
          <button type="button" class="chip-remove" aria-label=${`Remove segment ${state.segment}`}
            onClick=${() => navigate({ ...state, segment: '' })}>✕</button>
        </span>`}
      ${state.filters.map((f, i) => html`<${Chip} key=${f} text=${f} index=${i} state=${state} />`)}
      ${state.filters.length > 1 && html`
        <button type="button" class="link-button" onClick=${() => navigate({ ...state, filters: [] })}>Clear all</button>`}
    </div>`;
}

function Chip({ text, index, state }) {
  const parsed = parseFilter(text);
  const [editing, setEditing] = useState(false);
  const [op, setOp] = useState(parsed ? parsed.op : '==');
  const [value, setValue] = useState(parsed ? parsed.value : '');
  if (!parsed) return null;
  const opLabel = (OPS.find((o) => o.op === parsed.op) || OPS[0]).label;
  const replace = (next) => {
    const filters = state.filters.slice();
    if (next === null) filters.splice(index, 1);
    else filters[index] = next;
    navigate({ ...state, filters });
  };
  const save = (e) => {
    e.preventDefault();
    setEditing(false);
    if (value) replace(formatFilter(parsed.dimension, op, value));
  };
  return html`
    <span class="chip" data-filter=${text}>
      <button type="button" class="chip-text" aria-expanded=${editing ? 'true' : 'false'} onClick=${() => setEditing(!editing)}
        title="Change this filter">
        ${dimensionLabel(parsed.dimension)} <em>${opLabel}</em> <strong>${parsed.value}</strong>
      </button>
      <button type="button" class="chip-remove" aria-label=${`Remove filter ${dimensionLabel(parsed.dimension)} ${opLabel} ${parsed.value}`}
        onClick=${() => replace(null)}>✕</button>
      ${editing && html`
        <form class="chip-editor" onSubmit=${save}>
          <label class="sr-only" for=${'op-' + index}>Operator</label>
          <select id=${'op-' + index} class="select" value=${op} onChange=${(e) => setOp(e.currentTarget.value)}>
            ${OPS.map((o) => html`<option value=${o.op}>${o.label}</option>`)}
          </select>
          <label class="sr-only" for=${'val-' + index}>Value</label>
          <input id=${'val-' + index} class="input" value=${value} onInput=${(e) => setValue(e.currentTarget.value)} />
          <button type="submit" class="button">Apply</button>
        </form>`}
    </span>`;
}

// The site's saved segments: choose one (its filters apply to every panel, `segment=` in the URL),
// or save the current filters as a new one (admins; the API answers 403 to viewers).
export function SegmentPicker({ siteId, state, canSave }) {
  const [segments, setSegments] = useState(null);
  const [message, setMessage] = useState('');
  const load = () => api(`/sites/${encodeURIComponent(siteId)}/segments`).then(
    (data) => setSegments(data.segments), () => setSegments([]));
  useEffect(() => {
    load();
  }, [siteId]);
  const toFilters = () => state.filters.map((text) => {
    const f = parseFilter(text);
    return f && [OP_QUERY[f.op], f.dimension, f.op === '~=' || f.op === '!~=' ? [f.value] : f.value.split('|')];
  }).filter(Boolean);
  const [naming, setNaming] = useState(false);
  const [name, setName] = useState('');
  const save = async (e) => {
    e.preventDefault();
    if (!name.trim()) return;
    try {
      await api(`/sites/${encodeURIComponent(siteId)}/segments`, { method: 'POST', body: { name, filters: toFilters() } });
      setMessage('');
      setNaming(false);
      setName('');
      await load();
      navigate({ ...state, filters: [], segment: name.trim() });
    } catch (error) {
      setMessage(error.message);
    }
  };
  if (segments === null) return null;
  return html`
    <div class="segments">
      ${segments.length > 0 && html`
        <label class="sr-only" for="segment-select">Segment</label>
        <select id="segment-select" class="select" value=${state.segment}
          onChange=${(e) => navigate({ ...state, segment: e.currentTarget.value })}>
          <option value="">All visitors</option>
          ${segments.map((s) => html`<option value=${s.name}>${s.name}</option>`)}
        </select>`}
      ${canSave && state.filters.length > 0 && !naming && html`
        <button type="button" class="link-button" onClick=${() => setNaming(true)}>Save as segment</button>`}
      ${naming && html`
        <form class="segment-save" onSubmit=${save}>
          <label class="sr-only" for="segment-name">Segment name</label>
          <input id="segment-name" class="input" placeholder="Segment name" maxlength="100" required value=${name}
            onInput=${(e) => setName(e.currentTarget.value)} />
          <button type="submit" class="button">Save</button>
          <button type="button" class="link-button" onClick=${() => setNaming(false)}>Cancel</button>
        </form>`}
      ${message && html`<span class="segment-error" role="alert">${message}</span>`}
    </div>`;
}

// The query's operator names for the URL's (as api.params reads them).
const OP_QUERY = {
  '==': 'is', '!=': 'is_not', '~': 'contains', '!~': 'not_contains', '~=': 'matches',
  '!~=': 'does_not_match', '*=': 'matches_wildcard', '!*=': 'does_not_match_wildcard',
};
