// Locations: countries, and regions and cities where the server has a city database, by the
// visit's first event.
import { useEffect, useState } from 'preact/hooks';
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { COLUMNS, SESSION } from '../columns.js';
import { api } from '../api.js';
import { loadBreakdown } from '../breakdown.js';
import { apiParams } from '../state.js';
import { countryName } from '../format.js';

// City rows are GeoNames ids; their names come with them (`cityName`) and are kept for the labels.
const cityNames = new Map();
const cities = {
  id: 'cities', label: 'Cities', valueHeader: 'City', dimension: 'city', endpoint: 'cities', key: 'cities', field: 'city',
  metrics: SESSION, label_of: (id) => cityNames.get(id) || id,
};
// The rows as `loadBreakdown` makes them, remembering each city's name.
cities.load = async (siteId, state, { limit, offset = 0, q = '', metrics }) => {
  const want = metrics || cities.metrics;
  const params = apiParams(state, { limit, offset: offset || null, q, metrics: want.join(',') });
  const data = await api(`/sites/${encodeURIComponent(siteId)}/cities`, { params });
  return (data.cities || []).map((row) => {
    if (row.city != null && row.cityName) cityNames.set(row.city, row.cityName);
    return { value: row.city, cells: Object.fromEntries(want.map((m) => [m, row[COLUMNS[m].field]])) };
  });
};

export const LOCATION_TABS = [
  { id: 'countries', label: 'Countries', valueHeader: 'Country', dimension: 'country', endpoint: 'countries', key: 'countries', field: 'country',
    metrics: SESSION, label_of: countryName },
];
export const PLACE_TABS = [
  { id: 'regions', label: 'Regions', valueHeader: 'Region', dimension: 'region', endpoint: 'regions', key: 'regions', field: 'region', metrics: SESSION },
  cities,
];

export function LocationsPanel(props) {
  // Regions and cities only when the period has some (they need a city database on the server).
  const [places, setPlaces] = useState(false);
  const query = apiParams(props.state).toString();
  useEffect(() => {
    let live = true;
    // Two rows: at most one of them is the visits without a region.
    loadBreakdown(props.siteId, props.state, PLACE_TABS[0], { limit: 2 }).then(
      (rows) => live && setPlaces(rows.some((r) => r.value != null)),
      () => live && setPlaces(false),
    );
    return () => {
      live = false;
    };
  }, [props.siteId, query]);
  const tabs = places ? [...LOCATION_TABS, ...PLACE_TABS] : LOCATION_TABS;
  return html`<${Panel} id="locations" title="Locations" tabs=${tabs} ...${props} />`;
}
