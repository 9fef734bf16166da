// Funnels: one of the site's funnels (chosen in the URL's `funnel`), a bar per step with the
// visitors who reached it, the conversion from the first step and the drop-off from the previous
// one, under the dashboard's period, filters and segment (the API's /funnels/:id/answer).
import { useLayoutEffect, useState } from 'preact/hooks';
import { html } from '../html.js';
import { api } from '../api.js';
import { apiParams, navigate } from '../state.js';
import { fmt } from '../format.js';

// What a step is: a page pattern, an event name, or a goal (by the goal's current name).
function stepDefinition(step) {
  if (step.page != null) return `page ${step.page}`;
  if (step.event != null) return `event ${step.event}`;
  return `goal ${step.goalName}`;
}

function stepText(step) {
  if (step.label) return step.label;
  return step.page != null ? step.page : step.event != null ? step.event : step.goalName;
}

// The funnel's answer for the dashboard's question. Funnels follow visits' events, so imported
// aggregates never count: the panel asks without `imported` and says so.
async function loadFunnels(siteId, funnelId, state) {
  const site = encodeURIComponent(siteId);
  const { funnels } = await api(`/sites/${site}/funnels`);
  const chosen = funnels.find((f) => f.id === funnelId) || funnels[0];
  if (!chosen) return { funnels, chosen: null, answer: null };
  const params = apiParams(state);
  params.delete('imported');
  const answer = await api(`/sites/${site}/funnels/${encodeURIComponent(chosen.id)}/answer`, { params });
  return { funnels, chosen, answer };
}

export function FunnelsPanel({ siteId, state, site }) {
  const query = apiParams(state).toString();
  const loadedFor = `${query}#${state.funnel}`;
  const [result, setResult] = useState({ data: null, error: null });

  useLayoutEffect(() => {
    let live = true;
    loadFunnels(siteId, state.funnel, state).then(
      (data) => live && setResult({ data, error: null, for: loadedFor }),
      (error) => live && setResult({ data: null, error, for: loadedFor }),
    );
    return () => {
      live = false;
    };
  }, [siteId, query, state.funnel]);

  const data = result.data;
  const canManage = site && site.role !== 'viewer';
  const settings = `/sites/${encodeURIComponent(siteId)}/settings#funnels`;
  const choose = (e) => navigate({ ...state, funnel: e.currentTarget.value });
  return html`
    <section class="panel" id="panel-funnels" data-panel="funnels" data-funnel=${data && data.chosen ? data.chosen.id : ''}
      data-for=${result.for ? result.for.split('#')[0] : ''} data-ready=${result.for === loadedFor ? 'true' : 'false'}
      aria-labelledby="h-funnels">
      <header class="panel-head">
        <h2 id="h-funnels">Funnels</h2>
        ${data && data.funnels.length > 0 && html`
          <label class="funnel-pick"><span class="sr-only">Funnel</span>
            <select class="select" value=${data.chosen.id} onChange=${choose}>
              ${data.funnels.map((f) => html`<option value=${f.id}>${f.name}</option>`)}
            </select></label>`}
      </header>
      ${result.error
        ? html`<p class="panel-error" role="alert">Could not load the funnel: ${result.error.message}</p>`
        : !data
          ? html`<div class="skeleton" aria-busy="true"><span></span><span></span><span></span></div>`
          : !data.chosen
            ? html`<p class="panel-empty">${canManage
              ? html`<span>No funnels yet. <a href=${settings}>Create one in the site's settings</a>: 2–8 steps, each a page (<code>/blog/*</code> patterns too) or a custom event, in one visit or within days.</span>`
              : 'No funnels yet. An admin of this site can create one in its settings.'}</p>`
            : html`<${Steps} funnel=${data.chosen} answer=${data.answer} imported=${state.imported} />`}
    </section>`;
}

function Steps({ funnel, answer, imported }) {
  const steps = answer.steps;
  const first = Math.max(steps[0].visitors, 1);
  const per = funnel.per === 'visitor' ? `Per visitor, each step within ${funnel.days} days of the first.` : 'Per visit: every step in one visit.';
  return html`
    <p class="panel-note">${per}${imported ? ' Imported data has no visits to follow and is not counted.' : ''}</p>
    <div class="list-head" aria-hidden="true">
      <span>Step</span><span class="num">Visitors</span><span class="num">Conversion</span><span class="num">Drop-off</span>
    </div>
    <ol class="rows funnel-steps">
      ${steps.map((s) => html`
        <li data-step=${s.step} data-visitors=${s.visitors} data-conversion=${s.conversionFromFirst} data-drop-off=${s.dropOff}>
          <div class="row" title=${`Step ${s.step}: ${stepDefinition(s)}`}>
            <span class="bar" style=${{ width: `${(100 * s.visitors) / first}%` }}></span>
            <span class="label"><span class="step-no">${s.step}.</span> ${stepText(s)}</span>
            <span class="num">${fmt.number(s.visitors)}</span>
            <span class="num">${fmt.percent(s.conversionFromFirst)}</span>
            <span class="num">${s.step === 1 ? '–' : html`${fmt.number(s.dropOff)} <small>(${fmt.percent(s.dropOffRate)})</small>`}</span>
          </div>
        </li>`)}
    </ol>`;
}
