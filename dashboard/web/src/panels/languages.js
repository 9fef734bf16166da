// Languages and screen sizes.
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { SESSION } from '../columns.js';
import { languageName } from '../format.js';

export const LANGUAGE_TABS = [
  { id: 'languages', label: 'Languages', valueHeader: 'Language', dimension: 'language', endpoint: 'languages', key: 'languages', field: 'language',
    metrics: SESSION, label_of: (v) => { const n = languageName(v); return n && n !== v ? `${n} (${v})` : v; } },
  { id: 'screens', label: 'Screens', valueHeader: 'Screen size', dimension: 'screen', endpoint: 'screens', key: 'screens', field: 'screen', metrics: SESSION },
];

export function LanguagesPanel(props) {
  return html`<${Panel} id="languages" title="Languages & screens" tabs=${LANGUAGE_TABS} ...${props} />`;
}
