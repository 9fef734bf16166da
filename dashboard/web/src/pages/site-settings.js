// /sites/{id}/settings: name, time zone, retention, hostnames, excluded paths, DNT, goals, funnels, the
// snippet, members, sharing, import and export, reports and alerts, and deleting the site (its domain must be typed). Admins and owners only (the
// server refuses the page to viewers); members and deleting are the owners'.
import { useEffect, useState } from 'preact/hooks';
import { html } from '../html.js';
import { api, useApi } from '../api.js';
import { Layout, ErrorBox } from '../layout.js';
import { Snippet } from '../snippet.js';
import { Members } from '../members.js';
import { ShareSettings } from '../share-settings.js';
import { DataCard } from '../data-card.js';
import { ReportsCard } from '../reports-card.js';

const lines = (text) => text.split('\n').map((s) => s.trim()).filter(Boolean);

export function SiteSettings({ siteId }) {
  const id = encodeURIComponent(siteId);
  const [version, setVersion] = useState(0);
  const req = useApi(`/sites/${id}`, null, `${siteId}:${version}`);
  document.title = 'Site settings · LittleStats';
  if (req.error) return html`<${Layout}><${ErrorBox} error=${req.error} what="this site" /></${Layout}>`;
  const site = req.data;
  return html`
    <${Layout} site=${site}>
      <div class="page-head"><h1>Site settings</h1>
        ${site && html`<a href=${`/sites/${id}`}>Back to the dashboard</a>`}</div>
      ${!site ? html`<div class="skeleton" aria-busy="true"><span></span><span></span></div>`
        : site.role === 'viewer' ? html`<div class="notice" role="status"><p>You can read this site's statistics; its settings are for its admins and owners.</p></div>`
        : html`
        <${General} site=${site} onSaved=${() => setVersion(version + 1)} />
        <section class="card" aria-labelledby="snippet-title"><h2 id="snippet-title">Tracker snippet</h2><${Snippet} site=${site} /></section>
        <${Goals} site=${site} />
        <${Funnels} site=${site} />
        <${Members} site=${site} />
        <${ShareSettings} site=${site} onSaved=${() => setVersion(version + 1)} />
        <${DataCard} site=${site} />
        <${ReportsCard} site=${site} />
        ${(site.role === 'owner' || site.role === null) && html`<${Danger} site=${site} />`}`}
    </${Layout}>`;
}

function General({ site, onSaved }) {
  const [form, setForm] = useState(null);
  const [status, setStatus] = useState(null);
  useEffect(() => {
    setForm({
      name: site.name || '', timezone: site.timezone, retentionDays: String(site.retentionDays || 0),
      allowedHostnames: (site.allowedHostnames || []).join('\n'), excludedPaths: (site.excludedPaths || []).join('\n'),
      respectDnt: !!site.respectDnt,
      currency: site.revenue ? site.revenue.currency : '',
      rates: site.revenue ? Object.entries(site.revenue.rates).map(([c, r]) => `${c}=${r}`).join('\n') : '',
    });
  }, [site]);
  if (!form) return null;
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.type === 'checkbox' ? e.currentTarget.checked : e.currentTarget.value });
  const save = async (e) => {
    e.preventDefault();
    setStatus(null);
    try {
      await api(`/sites/${encodeURIComponent(site.id)}`, {
        method: 'PATCH',
        body: {
          name: form.name, timezone: form.timezone, retentionDays: Number(form.retentionDays) || 0,
          allowedHostnames: lines(form.allowedHostnames), excludedPaths: lines(form.excludedPaths), respectDnt: form.respectDnt,
          revenue: revenueSetting(form),
        },
      });
      setStatus({ ok: 'Saved.' });
      onSaved();
    } catch (error) {
      setStatus({ error });
    }
  };
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [form.timezone];
  return html`
    <form class="card form" onSubmit=${save} aria-labelledby="general-title">
      <h2 id="general-title">General</h2>
      <p class="hint">Domain <strong>${site.domain}</strong> · site id <code>${site.id}</code> · public key <code>${site.domainKey}</code></p>
      <label>Name <input class="input" value=${form.name} onInput=${set('name')} /></label>
      <label>Time zone
        <select class="select" value=${form.timezone} onChange=${set('timezone')}>
          ${(zones.includes(form.timezone) ? zones : [form.timezone, ...zones]).map((z) => html`<option value=${z}>${z}</option>`)}
        </select>
        <span class="hint">Days and hours of every report are this zone's.</span></label>
      <label>Retention (days, 0 = keep forever) <input class="input" type="number" min="0" value=${form.retentionDays} onInput=${set('retentionDays')} /></label>
      <label>Allowed hostnames (one per line; empty = any) <textarea class="input" rows="3" value=${form.allowedHostnames} onInput=${set('allowedHostnames')}></textarea></label>
      <label>Excluded paths (one per line, <code>*</code> as a wildcard) <textarea class="input" rows="3" value=${form.excludedPaths} onInput=${set('excludedPaths')}></textarea></label>
      <label class="toggle"><input type="checkbox" checked=${form.respectDnt} onChange=${set('respectDnt')} /> Respect Do-Not-Track and Global Privacy Control</label>
      <label>Revenue currency (ISO 4217, e.g. EUR; empty = no revenue) <input id="revenue-currency" class="input" maxlength="3" value=${form.currency} onInput=${set('currency')} /></label>
      <label>Exchange rates into it (one per line: <code>USD=0.92</code> means one USD is 0.92 of your currency) <textarea id="revenue-rates" class="input" rows="3" value=${form.rates} onInput=${set('rates')}></textarea>
        <span class="hint">Applied when reports are made, to all history; revenue in a currency without a rate is not counted.</span></label>
      ${status && status.error && html`<p class="form-error" role="alert">${status.error.message}</p>`}
      ${status && status.ok && html`<p class="form-ok" role="status">${status.ok}</p>`}
      <div class="actions"><button type="submit" class="button primary">Save</button></div>
    </form>`;
}

// {currency, rates} for PATCH /sites/:id from the form's text (null turns revenue off).
function revenueSetting(form) {
  const currency = form.currency.trim().toUpperCase();
  if (!currency) return null;
  const rates = {};
  for (const line of lines(form.rates)) {
    const [code, rate] = line.split('=').map((s) => s.trim());
    rates[(code || '').toUpperCase()] = Number(rate);
  }
  return { currency, rates };
}

function goalLabel(g) {
  const extra = [g.property && 'property', g.revenue && 'revenue'].filter(Boolean).join(', ');
  return extra ? `${g.name} (${extra})` : g.name;
}

function Goals({ site }) {
  const id = encodeURIComponent(site.id);
  const [version, setVersion] = useState(0);
  const goals = useApi(`/sites/${id}/goals`, null, version);
  const [kind, setKind] = useState('event');
  const [value, setValue] = useState('');
  const [propKey, setPropKey] = useState('');
  const [propValue, setPropValue] = useState('');
  const [revenue, setRevenue] = useState(false);
  const [error, setError] = useState(null);
  const add = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { kind, value: value.trim() };
      if (kind === 'event' && propKey.trim()) body.property = { key: propKey.trim(), value: propValue };
      if (kind === 'event' && revenue) body.revenue = true;
      await api(`/sites/${id}/goals`, { method: 'POST', body });
      setValue('');
      setPropKey('');
      setPropValue('');
      setRevenue(false);
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const remove = async (goal) => {
    setError(null);
    try {
      await api(`/sites/${id}/goals/${encodeURIComponent(goal.id)}`, { method: 'DELETE' });
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const list = goals.data ? goals.data.goals : [];
  return html`
    <section class="card" id="goals" aria-labelledby="goals-title">
      <h2 id="goals-title">Goals</h2>
      <p class="hint">A goal is a custom event (<code>Signup</code>, optionally only with a property value such as <code>plan</code> = <code>pro</code>, and marked as carrying revenue) or a page: a path (<code>/thank-you</code>) or a pattern, <code>*</code> for one path segment (<code>/blog/*</code>), <code>**</code> for any depth (<code>/docs/**</code>). The dashboard's Goals panel shows their conversions.</p>
      ${goals.error && html`<p class="form-error" role="alert">${goals.error.message}</p>`}
      ${list.length > 0 && html`<ul class="goal-list">${list.map((g) => html`
        <li data-goal=${g.name}><span>${g.kind === 'page' ? 'Page' : 'Event'}: <strong>${goalLabel(g)}</strong></span>
          <button type="button" class="button danger-quiet" aria-label=${`Delete goal ${g.name}`} onClick=${() => remove(g)}>Delete</button></li>`)}</ul>`}
      <form class="inline-form" onSubmit=${add}>
        <label class="sr-only" for="goal-kind">Kind</label>
        <select id="goal-kind" class="select" value=${kind} onChange=${(e) => setKind(e.currentTarget.value)}>
          <option value="event">Custom event</option><option value="page">Page visit</option>
        </select>
        <label class="sr-only" for="goal-value">Event name or page path or pattern</label>
        <input id="goal-value" class="input" required placeholder=${kind === 'page' ? '/blog/*' : 'Signup'} value=${value} onInput=${(e) => setValue(e.currentTarget.value)} />
        ${kind === 'event' && html`
          <label class="sr-only" for="goal-prop-key">Property name (optional)</label>
          <input id="goal-prop-key" class="input" placeholder="property (optional)" value=${propKey} onInput=${(e) => setPropKey(e.currentTarget.value)} />
          <label class="sr-only" for="goal-prop-value">Property value</label>
          <input id="goal-prop-value" class="input" placeholder="value" value=${propValue} onInput=${(e) => setPropValue(e.currentTarget.value)} />
          <label class="toggle"><input id="goal-revenue" type="checkbox" checked=${revenue} onChange=${(e) => setRevenue(e.currentTarget.checked)} /> Revenue</label>`}
        <button type="submit" class="button primary">Add goal</button>
      </form>
      ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
    </section>`;
}

const MIN_STEPS = 2;
const MAX_STEPS = 8;
const newStep = () => ({ kind: 'page', value: '' });

// The site's funnels, and a form for a new one: a name, 2–8 steps (each a page path or pattern,
// or a custom event name), counted per visit or per visitor within a number of days.
function Funnels({ site }) {
  const id = encodeURIComponent(site.id);
  const [version, setVersion] = useState(0);
  const funnels = useApi(`/sites/${id}/funnels`, null, version);
  const goals = useApi(`/sites/${id}/goals`, null, version);
  const goalList = goals.data ? goals.data.goals : [];
  const [name, setName] = useState('');
  const [steps, setSteps] = useState([newStep(), newStep()]);
  const [per, setPer] = useState('visit');
  const [days, setDays] = useState('7');
  const [error, setError] = useState(null);
  const setStep = (i, change) => setSteps(steps.map((s, j) => (j === i ? { ...s, ...change } : s)));
  const add = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { name: name.trim(), steps: steps.map((s) => ({ [s.kind]: s.value.trim() })), per };
      if (per === 'visitor') body.days = Number(days);
      await api(`/sites/${id}/funnels`, { method: 'POST', body });
      setName('');
      setSteps([newStep(), newStep()]);
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const remove = async (funnel) => {
    setError(null);
    try {
      await api(`/sites/${id}/funnels/${encodeURIComponent(funnel.id)}`, { method: 'DELETE' });
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const list = funnels.data ? funnels.data.funnels : [];
  return html`
    <section class="card" id="funnels" aria-labelledby="funnels-title">
      <h2 id="funnels-title">Funnels</h2>
      <p class="hint">A funnel follows visitors through 2–8 steps in order, each a page (a path, or a pattern: <code>/blog/*</code>, <code>/docs/**</code>), a custom event or one of the goals above (counted as the goal is defined when the funnel is shown, its property condition included); the dashboard's Funnels panel shows how many reached each step. Per visit, the steps must happen in one visit; per visitor, within a number of days of the first.</p>
      ${funnels.error && html`<p class="form-error" role="alert">${funnels.error.message}</p>`}
      ${list.length > 0 && html`<ul class="goal-list">${list.map((f) => html`
        <li data-funnel=${f.name}><span><strong>${f.name}</strong> · ${f.steps.length} steps · ${f.per === 'visitor' ? `per visitor, ${f.days} days` : 'per visit'}</span>
          <button type="button" class="button danger-quiet" aria-label=${`Delete funnel ${f.name}`} onClick=${() => remove(f)}>Delete</button></li>`)}</ul>`}
      <form class="form funnel-form" onSubmit=${add} aria-labelledby="funnel-new-title">
        <h3 id="funnel-new-title">New funnel</h3>
        <label>Funnel name <input id="funnel-name" class="input" required maxlength="100" value=${name} onInput=${(e) => setName(e.currentTarget.value)} /></label>
        <ol class="funnel-step-list">
          ${steps.map((s, i) => html`
            <li class="inline-form" data-step=${i + 1}>
              <span class="step-no" aria-hidden="true">${i + 1}.</span>
              <label class="sr-only" for=${`funnel-step-kind-${i}`}>Step ${i + 1} kind</label>
              <select id=${`funnel-step-kind-${i}`} class="select" value=${s.kind}
                onChange=${(e) => setStep(i, { kind: e.currentTarget.value, value: e.currentTarget.value === 'goal' && goalList.length ? goalList[0].id : '' })}>
                <option value="page">Page</option><option value="event">Custom event</option>
                ${goalList.length > 0 && html`<option value="goal">Goal</option>`}
              </select>
              <label class="sr-only" for=${`funnel-step-${i}`}>Step ${i + 1}: ${s.kind === 'page' ? 'page path or pattern' : s.kind === 'goal' ? 'goal' : 'event name'}</label>
              ${s.kind === 'goal'
                ? html`<select id=${`funnel-step-${i}`} class="select" value=${s.value} onChange=${(e) => setStep(i, { value: e.currentTarget.value })}>
                    ${goalList.map((g) => html`<option value=${g.id}>${g.name}</option>`)}</select>`
                : html`<input id=${`funnel-step-${i}`} class="input" required placeholder=${s.kind === 'page' ? '/pricing' : 'Signup'}
                    value=${s.value} onInput=${(e) => setStep(i, { value: e.currentTarget.value })} />`}
              ${steps.length > MIN_STEPS && html`<button type="button" class="button danger-quiet" aria-label=${`Remove step ${i + 1}`}
                onClick=${() => setSteps(steps.filter((_, j) => j !== i))}>Remove</button>`}
            </li>`)}
        </ol>
        ${steps.length < MAX_STEPS && html`<div><button type="button" class="button" onClick=${() => setSteps([...steps, newStep()])}>Add step</button></div>`}
        <label>Counted
          <select id="funnel-per" class="select" value=${per} onChange=${(e) => setPer(e.currentTarget.value)}>
            <option value="visit">Per visit (all steps in one visit)</option><option value="visitor">Per visitor (steps within some days)</option>
          </select></label>
        ${per === 'visitor' && html`<label>Days (1–90) <input id="funnel-days" class="input" type="number" min="1" max="90" required value=${days} onInput=${(e) => setDays(e.currentTarget.value)} /></label>`}
        ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
        <div class="actions"><button type="submit" class="button primary">Create funnel</button></div>
      </form>
    </section>`;
}

function Danger({ site }) {
  const [typed, setTyped] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const remove = async (e) => {
    e.preventDefault();
    if (typed !== site.domain) return;
    setBusy(true);
    setError(null);
    try {
      await api(`/sites/${encodeURIComponent(site.id)}`, { method: 'DELETE' });
      location.assign('/');
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`
    <form class="card form danger" onSubmit=${remove} aria-labelledby="danger-title">
      <h2 id="danger-title">Delete this site</h2>
      <p>Deletes the site, its goals and all of its data (raw events, facts, pre-aggregates). This cannot be undone.</p>
      <label>Type <strong>${site.domain}</strong> to confirm <input class="input" value=${typed} autocomplete="off" onInput=${(e) => setTyped(e.currentTarget.value)} /></label>
      ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
      <div class="actions"><button type="submit" class="button danger" disabled=${typed !== site.domain || busy}>${busy ? 'Deleting…' : 'Delete site and data'}</button></div>
    </form>`;
}
