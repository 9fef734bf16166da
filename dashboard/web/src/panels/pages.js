// Pages: the most viewed pages, and the pages visits entered and left by.
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { SESSION } from '../columns.js';

export const PAGE_TABS = [
  { id: 'pages', label: 'Top pages', valueHeader: 'Page', dimension: 'page', endpoint: 'pages', key: 'pages', field: 'page',
    metrics: ['visitors', 'views'], detailMetrics: ['visitors', 'views', 'visits', 'bounce_rate', 'time_on_page', 'scroll_depth'] },
  { id: 'entry-pages', label: 'Entry pages', valueHeader: 'Entry page', dimension: 'entry_page', endpoint: 'entry-pages', key: 'entryPages', field: 'page', metrics: SESSION },
  { id: 'exit-pages', label: 'Exit pages', valueHeader: 'Exit page', dimension: 'exit_page', endpoint: 'exit-pages', key: 'exitPages', field: 'page', metrics: SESSION },
];

export function PagesPanel(props) {
  return html`<${Panel} id="pages" title="Pages" tabs=${PAGE_TABS} ...${props} />`;
}
