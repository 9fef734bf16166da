// Devices: device class, browser and operating system; the details show versions.
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { SESSION } from '../columns.js';
import { loadPairs } from '../breakdown.js';
import { navigate, withFilter } from '../state.js';

const cap = (v) => (v ? v.charAt(0).toUpperCase() + v.slice(1) : v);

// Details by name and version through the general query; a row filters by both.
function versions(dimension, versionDimension) {
  return {
    detailsLabel: 'versions',
    details: (siteId, state, tab, opts) => loadPairs(siteId, state, [dimension, versionDimension], opts),
    detailLabel: (row) => `${row.pair[0] ?? '(unknown)'} ${row.pair[1] ?? ''}`.trim(),
    onDetailRow: (row, state) => {
      let next = withFilter(state, dimension, row.pair[0]);
      if (row.pair[1] != null) next = withFilter(next, versionDimension, row.pair[1]);
      navigate(next);
    },
  };
}

export const DEVICE_TABS = [
  { id: 'devices', label: 'Devices', valueHeader: 'Device', dimension: 'device', endpoint: 'devices', key: 'devices', field: 'device', metrics: SESSION, label_of: cap },
  { id: 'browsers', label: 'Browsers', valueHeader: 'Browser', dimension: 'browser', endpoint: 'browsers', key: 'browsers', field: 'browser', metrics: SESSION, ...versions('browser', 'browser_version') },
  { id: 'os', label: 'OS', valueHeader: 'Operating system', dimension: 'os', endpoint: 'os', key: 'os', field: 'os', metrics: SESSION, ...versions('os', 'os_version') },
];

export function DevicesPanel(props) {
  return html`<${Panel} id="devices" title="Devices" tabs=${DEVICE_TABS} ...${props} />`;
}
