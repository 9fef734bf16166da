// The "Reports and alerts" section of a site's settings (docs/reports.md): mailed weekly or monthly
// reports, traffic alert rules and webhooks with their delivery log, each with a test send. A
// webhook's signing secret is shown once, right after it is created. Admins and owners only.
import { useState } from 'preact/hooks';
import { html } from './html.js';
import { api, useApi } from './api.js';

const emails = (text) => text.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);

export function ReportsCard({ site }) {
  const id = encodeURIComponent(site.id);
  const [version, setVersion] = useState(0);
  const reports = useApi(`/sites/${id}/reports`, null, version);
  const alerts = useApi(`/sites/${id}/alerts`, null, version);
  const hooks = useApi(`/sites/${id}/webhooks`, null, version);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const act = async (path, options, done) => {
    setError(null);
    setNotice(null);
    try {
      const answer = await api(path, options);
      setVersion(version + 1);
      if (done) setNotice(done(answer));
      return answer;
    } catch (err) {
      setError(err);
      return null;
    }
  };
  const smtp = reports.data && reports.data.smtp;
  return html`
    <section class="card" id="reports" aria-labelledby="reports-title">
      <h2 id="reports-title">Reports and alerts</h2>
      ${smtp && !smtp.configured && html`<div class="notice" role="status"><p>${smtp.message}</p></div>`}
      <${Reports} id=${id} list=${reports.data ? reports.data.reports : []} act=${act} />
      <${Alerts} id=${id} list=${alerts.data ? alerts.data.alerts : []} act=${act} />
      <${Webhooks} id=${id} list=${hooks.data ? hooks.data.webhooks : []} act=${act} version=${version} />
      ${notice && html`<div class="notice" role="status" id="reports-notice">${notice}</div>`}
      ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
    </section>`;
}

function Reports({ id, list, act }) {
  const [email, setEmail] = useState('');
  const [frequency, setFrequency] = useState('weekly');
  const add = async (e) => {
    e.preventDefault();
    if (await act(`/sites/${id}/reports`, { method: 'POST', body: { email: email.trim(), frequency } })) setEmail('');
  };
  return html`
    <h3>Mailed reports</h3>
    <p class="hint">The headline numbers with their change, the top pages and sources, and the goals: weekly after Monday 01:00 or monthly after the 1st, in the site's time zone.</p>
    <ul class="goal-list">${list.map((r) => html`
      <li data-report=${r.email}><span><strong>${r.email}</strong> ${r.frequency}</span>
        <span>
          <button type="button" class="button" onClick=${() => act(`/sites/${id}/reports/${encodeURIComponent(r.id)}/test`, { method: 'POST' }, (a) => `Sent “${a.subject}” to ${a.to}.`)}>Send test</button>
          <button type="button" class="button danger-quiet" aria-label=${`Unsubscribe ${r.email}`}
            onClick=${() => act(`/sites/${id}/reports/${encodeURIComponent(r.id)}`, { method: 'DELETE' })}>Remove</button>
        </span></li>`)}
    </ul>
    <form class="inline-form" onSubmit=${add} aria-label="Subscribe to reports">
      <label class="sr-only" for="report-email">Recipient</label>
      <input id="report-email" class="input" type="email" required placeholder="name@example.com" value=${email} onInput=${(e) => setEmail(e.currentTarget.value)} />
      <label class="sr-only" for="report-frequency">How often</label>
      <select id="report-frequency" class="select" value=${frequency} onChange=${(e) => setFrequency(e.currentTarget.value)}>
        <option value="weekly">weekly</option><option value="monthly">monthly</option>
      </select>
      <button type="submit" class="button primary">Subscribe</button>
    </form>`;
}

function Alerts({ id, list, act }) {
  const [form, setForm] = useState({ direction: 'spike', threshold: '100', min: '10', recipients: '', webhooks: false });
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.type === 'checkbox' ? e.currentTarget.checked : e.currentTarget.value });
  const add = async (e) => {
    e.preventDefault();
    const body = { direction: form.direction, thresholdPercent: Number(form.threshold), minVisitors: Number(form.min),
      recipients: emails(form.recipients), webhooks: form.webhooks };
    if (await act(`/sites/${id}/alerts`, { method: 'POST', body })) setForm({ ...form, recipients: '' });
  };
  return html`
    <h3>Traffic alerts</h3>
    <p class="hint">An hour's visitors against the same hour a week before; sent once when the threshold is crossed.</p>
    <ul class="goal-list">${list.map((a) => html`
      <li data-alert=${a.id}><span><strong>${a.direction} of ${a.thresholdPercent}%</strong> (at least ${a.minVisitors} visitors)
        → ${[...a.recipients, ...(a.webhooks ? ['webhooks'] : [])].join(', ')}${a.firing ? ' · firing' : ''}</span>
        <span>
          <button type="button" class="button" onClick=${() => act(`/sites/${id}/alerts/${encodeURIComponent(a.id)}/test`, { method: 'POST' },
            (r) => r.problems.length ? r.problems.join(' ') : 'Test alert sent.')}>Send test</button>
          <button type="button" class="button danger-quiet" aria-label=${`Delete the ${a.direction} alert`}
            onClick=${() => act(`/sites/${id}/alerts/${encodeURIComponent(a.id)}`, { method: 'DELETE' })}>Remove</button>
        </span></li>`)}
    </ul>
    <form class="form" onSubmit=${add} aria-label="Create an alert rule">
      <label>Alert on a
        <select id="alert-direction" class="select" value=${form.direction} onChange=${set('direction')}>
          <option value="spike">spike</option><option value="drop">drop</option>
        </select></label>
      <label>of at least (%) <input id="alert-threshold" class="input" type="number" min="1" max="1000" required value=${form.threshold} onInput=${set('threshold')} /></label>
      <label>with at least (visitors in the hour) <input id="alert-min" class="input" type="number" min="1" required value=${form.min} onInput=${set('min')} /></label>
      <label>Mail to (addresses, separated by commas) <input id="alert-recipients" class="input" value=${form.recipients} onInput=${set('recipients')} /></label>
      <label class="check"><input type="checkbox" checked=${form.webhooks} onChange=${set('webhooks')} /> Send to the site's webhooks too</label>
      <button type="submit" class="button primary">Create alert</button>
    </form>`;
}

function Webhooks({ id, list, act, version }) {
  const [url, setUrl] = useState('');
  const [secret, setSecret] = useState(null);
  const [open, setOpen] = useState(null);
  const add = async (e) => {
    e.preventDefault();
    const hook = await act(`/sites/${id}/webhooks`, { method: 'POST', body: { url: url.trim(), events: ['goal.conversions', 'alert'] } });
    if (hook) {
      setSecret({ url: hook.url, secret: hook.secret });
      setUrl('');
    }
  };
  return html`
    <h3>Webhooks</h3>
    <p class="hint">Goal conversions (hourly) and alerts, POSTed as JSON and signed with HMAC-SHA256; failed deliveries are retried for about 15 hours.</p>
    <ul class="goal-list">${list.map((h) => html`
      <li data-webhook=${h.url}><span><strong>${h.url}</strong> ${h.events.join(', ')}</span>
        <span>
          <button type="button" class="button" onClick=${() => act(`/sites/${id}/webhooks/${encodeURIComponent(h.id)}/test`, { method: 'POST' },
            (d) => `Test delivery: ${d.status}${d.attempts.length ? ` (${d.attempts[d.attempts.length - 1].statusCode || d.attempts[d.attempts.length - 1].error})` : ''}.`)}>Send test</button>
          <button type="button" class="button" aria-expanded=${open === h.id ? 'true' : 'false'} onClick=${() => setOpen(open === h.id ? null : h.id)}>Deliveries</button>
          <button type="button" class="button danger-quiet" aria-label=${`Delete the webhook ${h.url}`}
            onClick=${() => act(`/sites/${id}/webhooks/${encodeURIComponent(h.id)}`, { method: 'DELETE' })}>Remove</button>
        </span>
        ${open === h.id && html`<${Deliveries} path=${`/sites/${id}/webhooks/${encodeURIComponent(h.id)}/deliveries?limit=20`} version=${version} />`}
      </li>`)}
    </ul>
    <form class="inline-form" onSubmit=${add} aria-label="Add a webhook">
      <label class="sr-only" for="webhook-url">Webhook URL</label>
      <input id="webhook-url" class="input" type="url" required placeholder="https://hooks.example.com/littlestats" value=${url} onInput=${(e) => setUrl(e.currentTarget.value)} />
      <button type="submit" class="button primary">Add webhook</button>
    </form>
    ${secret && html`
      <div class="notice invite-link" role="status">
        <p>The signing secret of <strong>${secret.url}</strong>, shown only now: keep it with the receiver to verify each delivery.</p>
        <input class="input" readonly value=${secret.secret} aria-label="Webhook secret" onFocus=${(e) => e.currentTarget.select()} />
      </div>`}`;
}

function Deliveries({ path, version }) {
  const req = useApi(path, null, version);
  if (req.error) return html`<p class="form-error" role="alert">${req.error.message}</p>`;
  const rows = req.data ? req.data.deliveries : [];
  return html`
    <table class="members deliveries">
      <thead><tr><th scope="col">Event</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Last answer</th><th scope="col">Next try</th></tr></thead>
      <tbody>${rows.map((d) => {
        const last = d.attempts[d.attempts.length - 1];
        return html`<tr data-delivery=${d.id}><td>${d.event}</td><td>${d.status}</td><td>${d.attempts.length}</td>
          <td>${last ? (last.statusCode || last.error) : '—'}</td><td>${d.nextAttemptAt || '—'}</td></tr>`;
      })}</tbody>
    </table>`;
}
