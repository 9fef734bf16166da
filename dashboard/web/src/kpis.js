// The KPI row: each metric of the period with its change against the previous period. A click
// puts the metric on the main chart (`metric=` in the URL).
import { html } from './html.js';
import { METRICS, fmt } from './format.js';
import { navigate } from './state.js';

function Change({ value, lowerIsBetter, points }) {
  if (value == null) return html`<span class="change none">–</span>`;
  const good = lowerIsBetter ? value < 0 : value > 0;
  const cls = value === 0 ? 'flat' : good ? 'up' : 'down';
  const arrow = value > 0 ? '↑' : value < 0 ? '↓' : '';
  const text = points ? `${fmt.decimal(Math.abs(value))} pt` : fmt.percent(Math.abs(value));
  return html`<span class=${'change ' + cls} data-change=${value}>${arrow} ${text}</span>`;
}

export function Kpis({ stats, error, state, loadedFor, ready }) {
  if (error) return html`<div class="kpis panel-error" role="alert" data-for=${loadedFor} data-ready=${ready ? 'true' : 'false'}>Could not load the totals: ${error.message}</div>`;
  return html`
    <div class="kpis" data-for=${loadedFor || ''} data-ready=${ready ? 'true' : 'false'}>
      ${METRICS.map((m) => {
        const value = stats ? stats[m.field] : null;
        const selected = state.metric === m.id;
        return html`
          <button type="button" class=${'kpi' + (selected ? ' selected' : '')} aria-pressed=${selected ? 'true' : 'false'}
            data-kpi=${m.id} onClick=${() => navigate({ ...state, metric: m.id })}>
            <span class="kpi-label">${m.label}</span>
            <span class="kpi-value" data-value=${value == null ? '' : value}>${stats ? m.format(value) : '\u00a0'}</span>
            ${stats && html`<${Change} value=${stats.change[m.field]} lowerIsBetter=${m.lowerIsBetter} points=${m.id === 'bounce_rate'} />`}
            ${stats && state.compare && html`<span class="kpi-previous">was ${m.format(stats.previous[m.field])}</span>`}
          </button>`;
      })}
    </div>`;
}
