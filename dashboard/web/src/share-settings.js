// The "Sharing" card of a site's settings: the public dashboard switch, the share links (label,
// password, embed origins; revoke), and a new link's URL and embed snippet — shown once, since
// the server keeps only a hash of it (docs/sharing.md).
import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { api, useApi } from './api.js';

const lines = (text) => text.split('\n').map((s) => s.trim()).filter(Boolean);

export function ShareSettings({ site, onSaved }) {
  const id = encodeURIComponent(site.id);
  const [version, setVersion] = useState(0);
  const shares = useApi(`/sites/${id}/shares`, null, version);
  const [form, setForm] = useState({ label: '', password: '', origins: '' });
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);
  const [isPublic, setIsPublic] = useState(!!site.public);
  useEffect(() => setIsPublic(!!site.public), [site]);
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });

  const add = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { label: form.label.trim(), embedOrigins: lines(form.origins) };
      if (form.password) body.password = form.password;
      setCreated(await api(`/sites/${id}/shares`, { method: 'POST', body }));
      setForm({ label: '', password: '', origins: '' });
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const revoke = async (share) => {
    setError(null);
    try {
      await api(`/sites/${id}/shares/${encodeURIComponent(share.id)}`, { method: 'DELETE' });
      setVersion(version + 1);
    } catch (err) {
      setError(err);
    }
  };
  const setPublic = async (e) => {
    const value = e.currentTarget.checked;
    setError(null);
    setIsPublic(value);
    try {
      await api(`/sites/${id}`, { method: 'PATCH', body: { public: value } });
      onSaved();
    } catch (err) {
      setIsPublic(!value);
      setError(err);
    }
  };
  const live = shares.data ? shares.data.shares.filter((s) => !s.revoked) : [];
  const publicUrl = `${location.origin}/share/${site.domain}`;
  return html`
    <section class="card share-card" id="sharing" aria-labelledby="sharing-title">
      <h2 id="sharing-title">Sharing</h2>
      <p class="hint">A share link shows this site's dashboard, read-only, to anyone who has it: no settings, no other site, no live event list.</p>
      <label class="toggle"><input type="checkbox" checked=${isPublic} onChange=${setPublic} data-public />
        Public dashboard at <a href=${publicUrl}>${publicUrl}</a></label>
      ${shares.error && html`<p class="form-error" role="alert">${shares.error.message}</p>`}
      ${live.length > 0 && html`<ul class="goal-list">${live.map((s) => html`
        <li data-share=${s.id}><span><strong>${s.label || 'Share link'}</strong> <code>/share/${s.slugHint}…</code>
          ${s.hasPassword ? ' · password' : ''}${s.embedOrigins.length ? ` · embeddable on ${s.embedOrigins.join(', ')}` : ''}</span>
          <button type="button" class="button danger-quiet" aria-label=${`Revoke share link ${s.label || s.slugHint}`} onClick=${() => revoke(s)}>Revoke</button></li>`)}</ul>`}
      ${created && html`<${NewLink} share=${created} />`}
      <form class="form" onSubmit=${add} aria-label="New share link">
        <label>Label <input class="input" name="label" value=${form.label} onInput=${set('label')} placeholder="Client A" /></label>
        <label>Password (optional, at least 8 characters) <input class="input" name="password" type="password" autocomplete="new-password" value=${form.password} onInput=${set('password')} /></label>
        <label>May be embedded on (origins, one per line) <textarea class="input" name="origins" rows="2" value=${form.origins} onInput=${set('origins')} placeholder="https://blog.example.com"></textarea></label>
        ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
        <div class="actions"><button type="submit" class="button primary">Create share link</button></div>
      </form>
    </section>`;
}

function NewLink({ share }) {
  const url = location.origin + share.path;
  const embed = `<iframe src="${url}?embed=true" title="Statistics" width="100%" height="900" style="border: 0"></iframe>`;
  return html`
    <div class="snippet" data-new-share>
      <p><strong>Copy the link now:</strong> it is shown only this once.</p>
      <pre tabindex="0" aria-label="Share link"><code data-share-url>${url}</code></pre>
      ${share.embedOrigins.length > 0 && html`<p>Embed it with:</p><pre tabindex="0" aria-label="Embed snippet"><code>${embed}</code></pre>`}
    </div>`;
}
