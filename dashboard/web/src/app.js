// The dashboard's single-page app: one page per path, each a client of the public API.
import { render } from 'preact';
import { html } from './html.js';
import { Layout } from './layout.js';
import { Dashboard } from './pages/dashboard.js';
import { Sites } from './pages/sites.js';
import { SiteSettings } from './pages/site-settings.js';
import { UserSettings } from './pages/user-settings.js';
import { config } from './config.js';
import './style.css';

function route(path) {
  if (config.share) return html`<${Dashboard} siteId=${config.share.site.id} />`;
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return html`<${Sites} />`;
  if (parts[0] === 'settings' && parts.length === 1) return html`<${UserSettings} />`;
  if (parts[0] === 'sites' && parts.length === 2) return html`<${Dashboard} key=${parts[1]} siteId=${parts[1]} />`;
  if (parts[0] === 'sites' && parts.length === 3 && parts[2] === 'settings') return html`<${SiteSettings} siteId=${parts[1]} />`;
  return html`<${Layout}><div class="notice"><h1>Not found</h1><p><a href="/">Back to your sites</a></p></div></${Layout}>`;
}

render(route(location.pathname), document.getElementById('app'));
