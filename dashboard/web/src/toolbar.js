// The period picker, the comparison toggle and the filter chips.
import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { OPS, PERIODS, dimensionLabel, formatFilter, navigate, parseFilter } from './state.js';
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
      <label class="toggle">
        <input type="checkbox" checked=${state.compare} onChange=${(e) => navigate({ ...state, compare: e.currentTarget.checked })} />
        Compare with previous period
      </label>
    </div>`;
}

export function FilterChips({ state }) {
  if (!state.filters.length) return null;
  return html`
    <div class="chips" aria-label="Filters">
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
