// The frame of every page: the header (home, site, settings, log out) and the content.
import { html } from './html.js';
import { config } from './config.js';

export function Layout({ site, children, wide }) {
  const user = config.user;
  return html`
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <div class=${'top-inner' + (wide ? ' wide' : '')}>
        <a class="brand" href="/" aria-label="LittleStats: your sites"><span class="logo" aria-hidden="true"></span>LittleStats</a>
        ${site && html`<span class="crumb" aria-hidden="true">/</span><a class="crumb-site" href=${`/sites/${encodeURIComponent(site.id)}`}>${site.name || site.domain}</a>`}
        <nav class="top-nav" aria-label="Account">
          ${config.dev && html`<span class="badge" title="littlestats serve --dev: authentication is off">dev mode</span>`}
          <a href="/settings">${user ? user.email : 'Settings'}</a>
          ${!config.dev && html`
            <form method="post" action="/logout" class="logout">
              <input type="hidden" name="csrf" value=${config.csrf} />
              <button type="submit" class="link-button">Log out</button>
            </form>`}
        </nav>
      </div>
    </header>
    <main id="main" class=${'content' + (wide ? ' wide' : '')}>${children}</main>`;
}

export function ErrorBox({ error, what }) {
  return html`<div class="panel panel-error" role="alert">
    <p><strong>Could not load ${what}.</strong> ${error.message}</p>
    ${error.status === 404 ? html`<p><a href="/">Back to your sites</a></p>` : html`<p>Reload the page to try again.</p>`}
  </div>`;
}
