// Custom events: names with counts; with an event filter, that event's properties, and a
// property's values (a click on a value filters by it).
import { useEffect, useState } from 'preact/hooks';
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { api } from '../api.js';
import { loadPairs } from '../breakdown.js';
import { apiParams, filterValue } from '../state.js';

const site = (id) => `/sites/${encodeURIComponent(id)}`;

// Names with visitors and events through the general query: /events would also read a page of
// the raw event list, which the panel does not show.
async function loadNames(siteId, state, { limit, offset = 0, q = '' }) {
  const rows = await loadPairs(siteId, state, ['event'], { limit, offset, q, metrics: ['visitors', 'events'] });
  return rows.map((r) => ({ value: r.value, cells: r.cells }));
}

function valuesTab(event, property) {
  return {
    id: `prop-${property}`, label: property, valueHeader: property, dimension: `props:${property}`,
    metrics: ['visitors', 'events'], shown: 2,
    load: async (siteId, state, { limit, offset = 0, q = '' }) => {
      const params = apiParams(state, { property, event, limit, offset: offset || null, q });
      const data = await api(`${site(siteId)}/events/properties`, { params });
      return data.values.map((v) => ({ value: v.value, cells: { visitors: v.visitors, events: v.events } }));
    },
  };
}

export function EventsPanel(props) {
  const event = filterValue(props.state, 'event');
  const [properties, setProperties] = useState({ event: null, list: null });
  useEffect(() => {
    if (!event) return undefined;
    let live = true;
    api(`${site(props.siteId)}/events/properties`, { params: apiParams(props.state, { event }) }).then(
      (d) => live && setProperties({ event, list: d.properties.map((p) => p.property) }),
      () => live && setProperties({ event, list: [] }),
    );
    return () => {
      live = false;
    };
  }, [props.siteId, event]);
  if (event) {
    const list = properties.event === event ? properties.list : null;
    if (list === null) {
      return html`<section class="panel" data-panel="events" data-for="" data-ready="false"><header class="panel-head"><h2>Custom events</h2></header>
        <div class="skeleton" aria-busy="true"><span></span><span></span></div></section>`;
    }
    if (list.length) {
      const tabs = list.slice(0, 6).map((p) => valuesTab(event, p));
      const note = html`<p class="panel-note">Properties of <strong>${event}</strong></p>`;
      return html`<${Panel} key=${'props-' + event} id="events" title="Custom events" tabs=${tabs} note=${note} ...${props} />`;
    }
  }
  const tabs = [{
    id: 'events', label: 'Events', valueHeader: 'Event', dimension: 'event', load: loadNames,
    metrics: ['visitors', 'events'], shown: 2,
    empty: 'No custom events in this period. Send them with littlestats.track("Signup", {plan: "pro"}).',
    rowTitle: (t) => `Filter by ${t} and show its properties`,
  }];
  return html`<${Panel} key="names" id="events" title="Custom events" tabs=${tabs} ...${props} />`;
}
