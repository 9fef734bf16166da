// The Members section of a site's settings: who has which role, invitations (the one-time link is
// shown to copy; no mail is sent), changing roles, removing members, leaving. Owners manage;
// admins see the list.
import { useState } from 'preact/hooks';
import { html } from './html.js';
import { api, useApi } from './api.js';
import { config } from './config.js';

const ROLES = [
  ['viewer', 'Viewer: reads the statistics'],
  ['admin', 'Admin: also settings and goals'],
  ['owner', 'Owner: everything, members too'],
];

export function Members({ site }) {
  const id = encodeURIComponent(site.id);
  const owner = site.role === 'owner';
  const [version, setVersion] = useState(0);
  const members = useApi(`/sites/${id}/members`, null, version);
  const invitations = useApi(`/sites/${id}/invitations`, null, version);
  const [error, setError] = useState(null);
  const [link, setLink] = useState(null);
  const [email, setEmail] = useState('');
  const [role, setRole] = useState('viewer');
  const me = config.user && config.user.id;
  const act = async (path, options) => {
    setError(null);
    try {
      const answer = await api(path, options);
      setVersion(version + 1);
      return answer;
    } catch (err) {
      setError(err);
      return null;
    }
  };
  const invite = async (e) => {
    e.preventDefault();
    const answer = await act(`/sites/${id}/invitations`, { method: 'POST', body: { email: email.trim(), role } });
    if (answer) {
      setLink({ url: answer.url, email: answer.email, role: answer.role });
      setEmail('');
    }
  };
  const leave = async () => {
    if (await act(`/sites/${id}/leave`, { method: 'POST' })) location.assign('/');
  };
  const list = members.data ? members.data.members : [];
  const open = invitations.data ? invitations.data.invitations.filter((i) => i.usable) : [];
  return html`
    <section class="card" id="members" aria-labelledby="members-title">
      <h2 id="members-title">Members</h2>
      <p class="hint">Viewers read the statistics; admins also change settings and goals; owners do everything, including members and deleting the site.</p>
      ${members.error && html`<p class="form-error" role="alert">${members.error.message}</p>`}
      <table class="members">
        <thead><tr><th scope="col">Member</th><th scope="col">Role</th>${owner && html`<th scope="col"><span class="sr-only">Actions</span></th>`}</tr></thead>
        <tbody>${list.map((m) => html`
          <tr data-member=${m.email}>
            <td>${m.email || m.name}${m.userId === me ? ' (you)' : ''}</td>
            <td>${owner ? html`
              <select class="select" aria-label=${`Role of ${m.email}`} value=${m.role}
                onChange=${(e) => act(`/sites/${id}/members/${encodeURIComponent(m.userId)}`, { method: 'PATCH', body: { role: e.currentTarget.value } })}>
                ${ROLES.map(([value]) => html`<option value=${value}>${value}</option>`)}
              </select>` : m.role}</td>
            ${owner && html`<td><button type="button" class="button danger-quiet" aria-label=${`Remove ${m.email}`}
              onClick=${() => act(`/sites/${id}/members/${encodeURIComponent(m.userId)}`, { method: 'DELETE' })}>Remove</button></td>`}
          </tr>`)}
        </tbody>
      </table>
      ${open.length > 0 && html`
        <h3>Open invitations</h3>
        <ul class="goal-list">${open.map((i) => html`
          <li data-invitation=${i.email}><span><strong>${i.email}</strong> as ${i.role}, until ${i.expiresAt.slice(0, 10)}</span>
            ${owner && html`<button type="button" class="button danger-quiet" aria-label=${`Withdraw the invitation of ${i.email}`}
              onClick=${() => act(`/sites/${id}/invitations/${encodeURIComponent(i.id)}`, { method: 'DELETE' })}>Withdraw</button>`}</li>`)}
        </ul>`}
      ${owner && html`
        <form class="inline-form" onSubmit=${invite} aria-label="Invite someone">
          <label class="sr-only" for="invite-email">Email</label>
          <input id="invite-email" class="input" type="email" required placeholder="name@example.com" value=${email} onInput=${(e) => setEmail(e.currentTarget.value)} />
          <label class="sr-only" for="invite-role">Role</label>
          <select id="invite-role" class="select" value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
            ${ROLES.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
          </select>
          <button type="submit" class="button primary">Invite</button>
        </form>`}
      ${link && html`
        <div class="notice invite-link" role="status">
          <p>Send this link to <strong>${link.email}</strong> (${link.role}). It works once, for 7 days, and is shown only now: no mail is sent.</p>
          <input class="input" readonly value=${link.url} aria-label="Invitation link" onFocus=${(e) => e.currentTarget.select()} />
          <button type="button" class="button" onClick=${() => navigator.clipboard && navigator.clipboard.writeText(link.url)}>Copy link</button>
        </div>`}
      ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
      ${site.role && !config.dev && html`<p class="hint"><button type="button" class="link-button" onClick=${leave}>Leave this site</button> (a site's last owner cannot leave: make someone else an owner first).</p>`}
    </section>`;
}
