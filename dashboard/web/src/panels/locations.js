// Locations: countries, by the visit's first event.
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { SESSION } from '../columns.js';
import { countryName } from '../format.js';

export const LOCATION_TABS = [
  { id: 'countries', label: 'Countries', valueHeader: 'Country', dimension: 'country', endpoint: 'countries', key: 'countries', field: 'country',
    metrics: SESSION, label_of: countryName },
];

export function LocationsPanel(props) {
  return html`<${Panel} id="locations" title="Locations" tabs=${LOCATION_TABS} ...${props} />`;
}
