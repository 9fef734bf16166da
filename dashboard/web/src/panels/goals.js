// Goals: conversions, conversion rate and (with the site's revenue currency) revenue of every goal.
import { html } from '../html.js';
import { Panel } from '../panel.js';
import { api } from '../api.js';
import { apiParams } from '../state.js';
import { config } from '../config.js';

async function loadGoals(siteId, state, { limit, offset = 0, q = '' }) {
  // A goal filter would make every goal but that one 0 %: the panel lists all goals under the
  // other filters (as the API's /conversions does).
  const data = await api(`/sites/${encodeURIComponent(siteId)}/conversions`, { params: apiParams(state) });
  const needle = q.toLowerCase();
  return data.goals
    .filter((g) => !needle || g.name.toLowerCase().includes(needle))
    .slice(offset, offset + limit)
    .map((g) => ({
      value: g.name, // what the goal filter and the goal dimension call it
      goal: g,
      cells: {
        visitors: g.visitors, conversions: g.conversions, conversion_rate: g.conversionRate,
        revenue: g.revenue && g.totalRevenue != null ? g.totalRevenue : null, // revenue goals only
      },
    }));
}

export const GOAL_TABS = [
  { id: 'goals', label: 'Goals', valueHeader: 'Goal', dimension: 'goal', load: loadGoals,
    metrics: ['visitors', 'conversions', 'conversion_rate', 'revenue'], shown: 4 },
];

export function GoalsPanel(props) {
  const empty = config.share ? 'No goals.' : html`<span>No goals yet. <a href=${`/sites/${encodeURIComponent(props.siteId)}/settings#goals`}>Add one in the site's settings</a>: a custom event or a page (<code>/blog/*</code> patterns too).</span>`;
  return html`<${Panel} id="goals" title="Goals" tabs=${GOAL_TABS.map((t) => ({ ...t, empty }))} ...${props} />`;
}
