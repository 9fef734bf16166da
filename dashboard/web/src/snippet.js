// The tracker snippet of a site, with a copy button.
import { useState } from 'preact/hooks';
import { html } from './html.js';

export function snippetOf(site) {
  return `<script defer src="${location.origin}/tracker.js" data-site-id="${site.domainKey}"></script>`;
}

export function Snippet({ site }) {
  const [copied, setCopied] = useState(false);
  const text = snippetOf(site);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied(true);
      setTimeout(() => setCopied(false), 2000);
    } catch {
      setCopied(false);
    }
  };
  return html`
    <div class="snippet">
      <p>Paste this into the <code>${'<head>'}</code> of every page of <strong>${site.domain}</strong>:</p>
      <pre tabindex="0" aria-label="Tracker snippet"><code>${text}</code></pre>
      <button type="button" class="button" onClick=${copy}>${copied ? 'Copied' : 'Copy snippet'}</button>
      <p class="hint">The tracker stores nothing in visitors' browsers (no cookie, no localStorage): a visitor is known by a hash that changes every day, so someone who returns on another day counts again.</p>
    </div>`;
}
