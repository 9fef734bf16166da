// /settings: the user's API tokens (create — shown once — list, revoke) and password.
import { useState } from 'preact/hooks';
import { html } from '../html.js';
import { api, useApi } from '../api.js';
import { config } from '../config.js';
import { Layout } from '../layout.js';

export function UserSettings() {
  document.title = 'Settings · LittleStats';
  return html`
    <${Layout}>
      <div class="page-head"><h1>Settings</h1></div>
      ${config.user && html`<p class="hint">Signed in as <strong>${config.user.email}</strong>.</p>`}
      <${Tokens} />
      <${Password} />
    </${Layout}>`;
}

function Tokens() {
  const [version, setVersion] = useState(0);
  const tokens = useApi('/tokens', null, version);
  const [name, setName] = useState('');
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);
  const create = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      setCreated(await api('/tokens', { method: 'POST', body: { name: name.trim() || 'dashboard' } }));
      setName('');
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const revoke = async (t) => {
    setError(null);
    try {
      await api(`/tokens/${encodeURIComponent(t.id)}`, { method: 'DELETE' });
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const list = tokens.data ? tokens.data.tokens : [];
  return html`
    <section class="card" aria-labelledby="tokens-title">
      <h2 id="tokens-title">API tokens</h2>
      <p class="hint">A token reads the same API this dashboard uses: <code>curl -H "Authorization: Bearer TOKEN" ${location.origin}/api/v2/sites</code>. See <a href="/api/v2/docs">the API reference</a>.</p>
      ${created && html`<div class="notice" role="status"><p><strong>Copy this token now</strong>: it is not shown again.</p>
        <pre tabindex="0" aria-label="New token"><code data-new-token>${created.token}</code></pre></div>`}
      ${tokens.error && html`<p class="form-error" role="alert">${tokens.error.message}</p>`}
      ${list.length > 0 ? html`<table class="plain-table"><thead><tr><th scope="col">Name</th><th scope="col">Created</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
        <tbody>${list.map((t) => html`<tr data-token=${t.id}><td>${t.name || t.id}</td><td>${t.createdAt ? new Date(t.createdAt).toLocaleDateString() : ''}</td>
          <td class="num"><button type="button" class="button danger-quiet" aria-label=${`Revoke token ${t.name || t.id}`} onClick=${() => revoke(t)}>Revoke</button></td></tr>`)}</tbody></table>`
        : tokens.data && html`<p class="panel-empty">No tokens yet.</p>`}
      ${config.dev && !config.user ? html`<p class="hint">Under <code>--dev</code> nobody is signed in to own a new token: create one with <code>littlestats token create --user EMAIL</code>.</p>` : html`
      <form class="inline-form" onSubmit=${create}>
        <label class="sr-only" for="token-name">Token name</label>
        <input id="token-name" class="input" placeholder="Name, e.g. reporting script" value=${name} onInput=${(e) => setName(e.currentTarget.value)} />
        <button type="submit" class="button primary">Create token</button>
      </form>`}
      ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
    </section>`;
}

function Password() {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [status, setStatus] = useState(null);
  if (config.dev || !config.user) {
    return html`<section class="card" aria-labelledby="pw-title"><h2 id="pw-title">Password</h2>
      <p class="hint">${config.dev ? 'The server runs with --dev: there is no login.' : 'Not signed in.'} Passwords are set with <code>littlestats users passwd EMAIL</code>.</p></section>`;
  }
  const save = async (e) => {
    e.preventDefault();
    setStatus(null);
    try {
      await api('/me/password', { method: 'POST', body: { current, new: next } });
      setCurrent('');
      setNext('');
      setStatus({ ok: 'Password changed.' });
    } catch (error) {
      setStatus({ error });
    }
  };
  return html`
    <form class="card form" onSubmit=${save} aria-labelledby="pw-title">
      <h2 id="pw-title">Password</h2>
      <label>Current password <input class="input" type="password" autocomplete="current-password" required value=${current} onInput=${(e) => setCurrent(e.currentTarget.value)} /></label>
      <label>New password <input class="input" type="password" autocomplete="new-password" required minlength="8" value=${next} onInput=${(e) => setNext(e.currentTarget.value)} /></label>
      ${status && status.error && html`<p class="form-error" role="alert">${status.error.message}</p>`}
      ${status && status.ok && html`<p class="form-ok" role="status">${status.ok}</p>`}
      <div class="actions"><button type="submit" class="button primary">Change password</button></div>
    </form>`;
}
