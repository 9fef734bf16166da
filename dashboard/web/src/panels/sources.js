// Sources: where visits came from — grouped sources, referrer domains and the five UTM tags.
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { SESSION } from '../columns.js';

const utm = (type, label) => ({
  id: type, label, dimension: type, endpoint: 'utm', params: { type }, key: 'utm', field: 'value',
  metrics: SESSION, unknown: `(no ${label.toLowerCase()})`,
});

export const SOURCE_TABS = [
  { id: 'sources', label: 'Sources', valueHeader: 'Source', dimension: 'source', endpoint: 'sources', key: 'sources', field: 'source', metrics: SESSION },
  { id: 'referrers', label: 'Referrers', valueHeader: 'Referrer', dimension: 'referrer_domain', endpoint: 'referrers', key: 'referrers', field: 'referrer', metrics: SESSION, unknown: '(none)' },
  utm('utm_source', 'UTM source'),
  utm('utm_medium', 'Medium'),
  utm('utm_campaign', 'Campaign'),
  utm('utm_term', 'Term'),
  utm('utm_content', 'Content'),
];

export function SourcesPanel(props) {
  return html`<${Panel} id="sources" title="Sources" tabs=${SOURCE_TABS} ...${props} />`;
}
