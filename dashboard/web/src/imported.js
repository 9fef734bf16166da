// "Include imported data": shown when the site has imported aggregates (a Plausible import);
// `imported=true` in the URL adds them to every panel, as Plausible's toggle does. The stats
// answer says when a number is approximate or why the imported data were left out.
import { html } from './html.js';
import { navigate } from './state.js';

export function ImportedToggle({ state, imported }) {
  if (!imported || !imported.available) return null;
  const note = !state.imported ? null
    : !imported.included ? `Imported data not included: ${imported.skipReason || 'not available here'}.`
    : imported.approximate && imported.approximate.length
      ? `Includes imported data; ${imported.approximate.join(', ')} approximate (sums of daily counts).`
      : 'Includes imported data.';
  return html`
    <div class="imported" data-imported=${imported.included ? 'included' : 'excluded'}>
      <label class="toggle">
        <input type="checkbox" checked=${state.imported} onChange=${(e) => navigate({ ...state, imported: e.currentTarget.checked })} />
        Include imported data
      </label>
      ${note && html`<span class="imported-note" role="status">${note}</span>`}
    </div>`;
}
