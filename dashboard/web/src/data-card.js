// The settings page's "Import and export" card: download the site as a Plausible CSV export
// (zip) or its raw events (Parquet) for a range of dates; upload another tool's export; follow
// each import's status, progress and counts, and delete one. Every action is one /api/v2 call.
import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { api, apiUrl, ApiError, useApi } from './api.js';
import { config } from './config.js';
import { fmt } from './format.js';

const SOURCES = [
  { id: 'goatcounter', label: 'GoatCounter', hint: 'In GoatCounter: Settings → Export → Start export, then download the CSV.' },
  { id: 'umami', label: 'Umami', hint: "Umami has no export: copy its website_event table as CSV with a header (psql: \\copy (SELECT * FROM website_event) TO 'website_event.csv' CSV HEADER)." },
  { id: 'plausible', label: 'Plausible', hint: 'In Plausible CE: Site settings → Imports & Exports → Export; upload the zip as it is (daily totals, not events).' },
  { id: 'littlestats-v2', label: 'LittleStats v2', hint: 'wrangler d1 export <database> --remote --output=littlestats.sql, or the D1 database file (.sqlite).' },
  { id: 'littlestats-v1', label: 'LittleStats v1', hint: 'The v1 SQLite database file, or a .sql dump of it.' },
];

const STATUS = { running: 'Running', done: 'Done', failed: 'Failed', deleting: 'Deleting' };

export function DataCard({ site }) {
  const [version, setVersion] = useState(0);
  const id = encodeURIComponent(site.id);
  const imports = useApi(`/sites/${id}/imports`, null, version);
  const list = imports.data ? imports.data.imports : [];
  const busy = list.some((i) => i.status === 'running' || i.status === 'deleting');
  useEffect(() => {
    if (!busy) return undefined;
    const t = setTimeout(() => setVersion((v) => v + 1), 1000); // follow a running import
    return () => clearTimeout(t);
  }, [busy, imports.data]);
  const refresh = () => setVersion((v) => v + 1);
  return html`
    <section class="card data-card" id="data" aria-labelledby="data-title">
      <h2 id="data-title">Import and export</h2>
      <${Export} site=${site} />
      <${Upload} site=${site} onDone=${refresh} />
      ${imports.error && html`<p class="form-error" role="alert">${imports.error.message}</p>`}
      ${list.length > 0 && html`<${Imports} site=${site} list=${list} onChange=${refresh} />`}
    </section>`;
}

function Export({ site }) {
  const [start, setStart] = useState('');
  const [end, setEnd] = useState('');
  const range = new URLSearchParams();
  const ranged = start && end;
  if (ranged) {
    range.set('start', start);
    range.set('end', end);
  }
  const bad = ranged && end < start;
  const path = `/sites/${encodeURIComponent(site.id)}/export`;
  return html`
    <h3>Export</h3>
    <p class="hint">Every visit and event of ${ranged ? 'these days' : 'the site'} (dates in the site's time zone, both included; leave them empty for everything).</p>
    <div class="inline-form export-range">
      <label>From <input id="export-start" class="input" type="date" value=${start} max=${end || undefined} onInput=${(e) => setStart(e.currentTarget.value)} /></label>
      <label>To <input id="export-end" class="input" type="date" value=${end} min=${start || undefined} onInput=${(e) => setEnd(e.currentTarget.value)} /></label>
    </div>
    ${bad ? html`<p class="form-error" role="alert">The end is before the start.</p>` : html`
    <div class="actions export-links">
      <a class="button" id="export-plausible" download href=${apiUrl(path, range)}>Plausible CSV export (.zip)</a>
      <a class="button" id="export-raw" download href=${apiUrl(path + '/raw', range)}>Raw events (.parquet)</a>
    </div>`}`;
}

// Upload with XMLHttpRequest for its progress events: an export can be gigabytes.
function send(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('X-CSRF-Token', config.csrf);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, 'The upload did not reach the server. Check that it is running, then try again.'));
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status === 401) location.reload();
      if (xhr.status >= 200 && xhr.status < 300) resolve(data || {});
      else reject(new ApiError(xhr.status, (data && data.error) || `The server answered ${xhr.status}.`));
    };
    xhr.send(file);
  });
}

function Upload({ site, onDone }) {
  const [source, setSource] = useState(SOURCES[0].id);
  const [file, setFile] = useState(null);
  const [sent, setSent] = useState(null); // share of the file uploaded, while uploading
  const [status, setStatus] = useState(null);
  const hint = SOURCES.find((s) => s.id === source).hint;
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    if (!file) return;
    setStatus(null);
    setSent(0);
    const params = new URLSearchParams({ source, filename: file.name });
    try {
      const data = await send(apiUrl(`/sites/${encodeURIComponent(site.id)}/imports`, params), file, setSent);
      setStatus({ ok: data.alreadyImported ? data.message : `Uploaded ${file.name}: importing.` });
      form.querySelector('#import-file').value = ''; // the next file is a new choice
      setFile(null);
      onDone();
    } catch (error) {
      setStatus({ error });
    }
    setSent(null);
  };
  return html`
    <h3>Import</h3>
    <form class="form import-form" onSubmit=${submit}>
      <label>From
        <select id="import-source" class="select" value=${source} onChange=${(e) => setSource(e.currentTarget.value)}>
          ${SOURCES.map((s) => html`<option value=${s.id}>${s.label}</option>`)}
        </select>
        <span class="hint" id="import-hint">${hint}</span></label>
      <label>File <input id="import-file" class="input" type="file" required aria-describedby="import-hint"
        onChange=${(e) => setFile(e.currentTarget.files[0] || null)} /></label>
      <p class="hint">Imported events never overlap the tracker's: the history stops where its data begins. Importing the same file again does nothing.</p>
      ${sent != null && html`<p class="hint" role="status">Uploading… <progress max="1" value=${sent}></progress> ${Math.round(100 * sent)}%</p>`}
      ${status && status.error && html`<p class="form-error" role="alert">${status.error.message}</p>`}
      ${status && status.ok && html`<p class="form-ok" role="status">${status.ok}</p>`}
      <div class="actions"><button type="submit" class="button primary" disabled=${!file || sent != null}>Upload and import</button></div>
    </form>`;
}

function skippedText(skipped) {
  const parts = Object.entries(skipped || {}).filter(([, n]) => n > 0).map(([k, n]) => `${fmt.number(n)} ${k.replace(/_/g, ' ')}`);
  return parts.length ? `skipped: ${parts.join(', ')}` : '';
}

function Imports({ site, list, onChange }) {
  const [error, setError] = useState(null);
  const remove = async (imp) => {
    if (!confirm(`Delete the import of ${imp.fileName}? Its events leave every report.`)) return;
    setError(null);
    try {
      await api(`/sites/${encodeURIComponent(site.id)}/imports/${encodeURIComponent(imp.id)}`, { method: 'DELETE' });
    } catch (err) {
      setError(err);
    }
    onChange();
  };
  return html`
    <h3>Imports</h3>
    ${error && html`<p class="form-error" role="alert">${error.message}</p>`}
    <ul class="import-list">${list.map((imp) => html`
      <li data-import=${imp.id} data-status=${imp.status} data-events=${imp.eventsWritten}>
        <div class="import-main">
          <strong>${imp.fileName}</strong> <span class="hint">${(SOURCES.find((s) => s.id === imp.source) || { label: imp.source }).label}</span>
          <span class=${'import-status status-' + imp.status}>${STATUS[imp.status] || imp.status}${imp.status === 'running' ? ` ${Math.round(100 * imp.progress)}%` : ''}</span>
          ${imp.status === 'running' && html`<progress max="1" value=${imp.progress} aria-label=${`Progress of ${imp.fileName}`}></progress>`}
          <span class="hint import-counts">${fmt.number(imp.rowsRead)} rows read, ${fmt.number(imp.eventsWritten)} ${imp.source === 'plausible' ? 'rows' : 'events'} imported${skippedText(imp.skipped) ? ` · ${skippedText(imp.skipped)}` : ''}${imp.firstEvent ? ` · ${imp.firstEvent.slice(0, 10)} to ${(imp.lastEvent || '').slice(0, 10)}` : ''}</span>
          ${imp.message && html`<span class=${imp.status === 'failed' ? 'form-error import-message' : 'hint import-message'}>${imp.message}</span>`}
        </div>
        <button type="button" class="button danger-quiet" disabled=${imp.status === 'running' || imp.status === 'deleting'}
          aria-label=${`Delete the import of ${imp.fileName}`} onClick=${() => remove(imp)}>Delete</button>
      </li>`)}</ul>`;
}
