/*
 * LittleStats tracker, readable source. `scripts/build-tracker` minifies it into tracker/tracker.js,
 * which is what GET /tracker.js serves (committed, so running LittleStats needs no Node).
 * What it sends and when: docs/tracker.md.
 *
 *   <script defer src="https://stats.example.com/tracker.js" data-site-id="DOMAIN_KEY"></script>
 *
 * Wire protocol (SPEC §3): batches {"siteId", "events": [...]} POSTed to {base}/api/v2/track/{site},
 * each event with its own client time `ts`.
 *
 * Delivery: while the page is visible a batch goes by fetch(..., {keepalive: true}), so the server's
 * answer (the visit cache) can be read; when the page is being hidden or unloaded it goes by
 * navigator.sendBeacon, and by keepalive fetch if the browser refuses the beacon. A batch leaves the
 * buffer before it is sent, so each event is sent once and only once.
 */
((w, d, nav, loc, hist) => {
  var script = d.currentScript;
  var noop = () => {};
  var api = { track: noop, identify: noop, trackPageView: noop, destroy: noop, consent: noop };
  var attr = script?.dataset || {}; // data-flush-interval is attr.flushInterval
  var flag = (name) => (name = attr[name]) != null && name != 'false';
  var site = attr.siteId;

  // A second copy of the snippet on the same page keeps the first one running.
  if (!script || w.littlestats?.destroy) return;
  w.littlestats = api;
  // The seed's global functions; never clobber a page's own `track` or `identify`.
  ['track', 'identify'].forEach((k) => k in w || (w[k] = (a, b) => api[k](a, b)));

  if (
    !site ||
    (flag('respectDnt') && (nav.doNotTrack == 1 || nav.globalPrivacyControl)) ||
    (!flag('allowLocalhost') && /^(localhost|127\..*|\[::1\]|.*\.localhost|)$/.test(loc.hostname))
  ) return;

  // The API lives next to the script (so a path prefix behind a proxy works); data-host overrides.
  var host = attr.host;
  var endpoint = new URL('api/v2/track/' + site, host ? host.replace(/\/?$/, '/') : script.src);
  var hashRouting = flag('hash');
  var flushMs = +attr.flushInterval || 1000;
  var downloadList = attr.fileDownloads;
  var outbound = flag('outboundLinks');

  // --- storage: nothing on the visitor's device unless the site asks for it (SPEC §4) --------
  // By default the visit lives in this page's memory and no visitorId is sent: the server's
  // daily-salted key (site + IP + user agent) tells visitors apart, so nothing needs consent.
  // With data-persistent-id, or once the site's consent banner calls littlestats.consent(true),
  // a random id (ls_id) and the visit (ls_visit) are kept in localStorage; consent(false)
  // removes them (and ls_vid, where older trackers kept the id).
  var store; // localStorage while an id may be kept there
  var visitorId;
  var load = () => {
    try {
      return JSON.parse(store.ls_visit);
    } catch {}
  };
  var save = (visit) => {
    try {
      store.ls_visit = JSON.stringify(visit);
    } catch {}
  };
  // The visit: {c: the server's cache answer, t: time of our last event, u: the visit's campaign,
  // i: the visitorId it is counted under}. It ends after 30 minutes without an event, as on the
  // server (SPEC §5). A visit keeps the id it started with, so consent given halfway never splits
  // one visit between two visitors: the id counts from the next visit on.
  var memoryVisit = {};
  var currentVisit = (now, v) => {
    // consent withdrawn in another tab: this one stops keeping and sending the id too
    if (visitorId && !store.ls_id) consent();
    v = load() || memoryVisit;
    return (memoryVisit = now - v.t < 18e5 ? v : { i: visitorId });
  };
  // yes: keep an id (the stored one, else a new one); no: remove everything; null (at start): keep
  // one only if one is stored. When storage is blocked or full, or the page is not a secure context
  // (plain http has no crypto.randomUUID), no id at all: a new one on every page would count each
  // page as a new visitor.
  var consent = (yes) => {
    try {
      store = w.localStorage;
      if (yes ?? store.ls_id) {
        store.ls_id = visitorId = store.ls_id || crypto.randomUUID();
        return;
      }
      delete store.ls_visit, delete store.ls_vid, delete store.ls_id;
      memoryVisit = {}; // a withdrawn id is not sent again, not even for the rest of this visit
    } catch {}
    store = visitorId = undefined;
  };
  consent(flag('persistentId') || null);

  // --- the buffer and its delivery -------------------------------------------------------------
  var queue = [];
  var inflight = 0; // characters of keepalive requests on their way
  var timer = 0;
  var dead = 0;
  var undo = [];

  var send = (events, beacon) => {
    // sentAt lets the server correct event times for a client clock that runs fast or slow.
    var body = JSON.stringify({ siteId: site, sentAt: Date.now(), events });
    if (events[1] && body.length > 2e4) {
      // The server takes at most 64 KiB per request: 20,000 characters are under 60 KB in UTF-8
      // whatever they are (4-byte characters count as two). Rare (long titles, many properties):
      // then each event goes on its own.
      events.map((e) => send([e], beacon));
    } else if (!(beacon && nav.sendBeacon(endpoint, body))) {
      // keepalive lets a request outlive the page, within a 64 KiB budget for all such requests
      // in flight; past it the browser would refuse the request, so a big burst goes without.
      var keepalive = inflight + body.length < 2e4;
      inflight += keepalive && body.length;
      // Cross-origin fetch sends no cookies by default, and the answer is readable (CORS *).
      fetch(endpoint, { method: 'POST', body, keepalive })
        .then((r) => r.json())
        .then((answer, v) => {
          if (answer.cache) {
            (v = currentVisit(Date.now())).c = answer.cache;
            save(v);
          }
        }, noop)
        .then(() => (inflight -= keepalive && body.length));
    }
  };

  // Take the events out first: whatever is queued while this batch is on its way goes next time.
  var flush = (beacon, events) => {
    clearTimeout(timer);
    timer = 0;
    events = queue;
    queue = [];
    if (events[0]) send(events, beacon || d.hidden);
  };

  var here = () => (hashRouting ? loc.href : loc.href.replace(/#.*/, ''));

  var push = (type, fields, url) => {
    if (dead) return;
    var ts = Date.now();
    var visit = currentVisit(ts);
    var u = new URL(url || here());
    var params = u.searchParams;
    var campaign = {};
    var found;
    var k;
    for (k of params.keys()) if (/^utm_/.test(k)) found = campaign[k] = params.get(k);
    // A campaign holds for the rest of the visit, so pageviews after an SPA navigation (or on the
    // next page) and conversions stay credited to it (SPEC §10). Reports about a page already
    // left (`url` given) never start one: that page may belong to a visit that has ended.
    if (!found) for (k in visit.u) params.set(k, visit.u[k]);
    else if (!url) visit.u = campaign;
    visit.t = ts;
    save(visit);
    queue.push({
      type,
      url: u.href.slice(0, 2000),
      referrer: d.referrer.slice(0, 2000),
      title: d.title,
      screen: screen.width + 'x' + screen.height,
      language: nav.language,
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      visitorId: visit.i,
      cache: visit.c,
      ts,
      ...fields
    });
    if (queue.length > 9) flush();
    else timer = timer || setTimeout(flush, flushMs);
  };

  // Custom properties: flat strings, finite numbers and booleans, as the server takes them.
  // Over-long strings are cut, and extra properties and over-long names left out, rather than the
  // event rejected (the server's limits: 30 properties, names of 64, values of 500 characters).
  var props = (data, out = {}, n = 0, k, v) => {
    for (k in data) {
      v = data[k];
      if (typeof v == 'string') v = v.slice(0, 500);
      else if (typeof v != 'boolean' && !Number.isFinite(v)) continue;
      if (k.length < 65 && n++ < 30) out[k] = v;
    }
    return out;
  };

  // `revenue: {amount, currency}` among the properties goes apart, as the event's revenue.
  var track = (name, data) => name && push('event', { revenue: data?.revenue, name: '' + name, data: props(data) });

  // --- time on page: visible time only ---------------------------------------------------------
  var page; // the URL of the current page view
  var lastView = 0;
  var engaged = 0;
  var visibleSince = 0;
  var reported;
  var deepest; // the deepest point of the page seen, in percent of its height

  // How far down the page the bottom of the window has been, in percent of the page's height (a
  // page shorter than the window: 100 or more). Neither rounded nor capped: the server keeps the
  // whole percent and counts anything above 100 as 100.
  var scrolled = () => (deepest = Math.max(deepest, ((scrollY + innerHeight) * 100) / d.body.scrollHeight));

  // Adds the visible time up to now; goes on counting while visible and not leaving.
  var tick = (leaving, now = Date.now()) => {
    if (visibleSince) engaged += now - visibleSince;
    visibleSince = !leaving && !d.hidden && now;
  };
  // engagementTime is the page view's total visible time so far (not a delta): the last report of
  // a page view is its time on page, and a report lost or sent twice cannot skew it. (The server
  // counts more than a day as a day.)
  var report = (type, leaving) => {
    tick(leaving);
    if (page && (type == 'page_exit' || engaged > reported)) {
      push(type, { engagementTime: (reported = engaged), scrollDepth: scrolled() }, page);
    }
  };

  var view = (manual, url = here(), now = Date.now()) => {
    // A history update that keeps the URL is not a navigation, and the same URL twice within 2 s
    // (a framework and the site both reporting one view) counts once.
    if (url == page && (!manual || now - lastView < 2000)) return;
    report('page_exit', 1);
    page = url;
    lastView = now;
    engaged = deepest = 0;
    reported = -1;
    tick();
    push('pageview');
  };

  // --- wiring ----------------------------------------------------------------------------------
  var listen = (target, type, handler) => {
    target.addEventListener(type, handler, true);
    undo.push(() => target.removeEventListener(type, handler, true));
  };
  // An SPA changes the title (and may redirect) just after it changes the URL: the view is taken
  // a moment later, once, for the URL it settled on.
  var navTimer;
  var navigated = () => {
    clearTimeout(navTimer);
    navTimer = setTimeout(view, 100);
  };

  listen(w, 'scroll', scrolled);
  listen(d, 'visibilitychange', () => {
    if (d.hidden) {
      report('engagement');
      flush(1);
    } else tick();
  });
  listen(w, 'pagehide', () => {
    view(); // a navigation still waiting for its view
    report('page_exit', 1);
    flush(1);
  });
  // A page restored from the back/forward cache is the same page view: `visibilitychange` to
  // visible resumes its clock, and there is no new view.
  // A heartbeat while the page is read: a visit stays open past 30 minutes on one page, and the
  // time is known even if the exit report never arrives.
  var heartbeat = setInterval(() => d.hidden || report('engagement'), 6e5);

  // File extensions that make a link a download: the attribute's list, else today's common ones
  // (Plausible's list without the formats of the last century).
  var downloads =
    downloadList != null &&
    RegExp(
      '\\.(' +
        (downloadList && downloadList != 'true'
          ? (downloadList.match(/\w+/g) || []).join('|')
          : 'pdf|docx?|xlsx?|pp[st]x?|csv|txt|zip|rar|7z|gz|dmg|exe|pkg|mp[34]|mov|avi') +
        ')$',
      'i'
    );
  ['click', 'auxclick'].forEach((type) =>
    listen(d, type, (e, a) => {
      a = e.target.closest?.('a[href]');
      // `click` is the primary button, `auxclick` any other: count the middle one, not the right.
      if (!a || e.button > 1 || !/^http/.test(a.protocol)) return;
      if (downloads && downloads.test(a.pathname)) track('File Download', { url: a.href });
      else if (outbound && a.host != loc.host) track('Outbound Link: Click', { url: a.href });
      else return;
      flush(1); // the page may be about to go away
    })
  );

  api.track = track;
  api.identify = (id, traits) => id != null && push('identify', { id: '' + id, data: props(traits) });
  api.trackPageView = () => view(1);
  api.consent = (yes) => consent(!!yes);
  api.destroy = () => {
    flush();
    dead = 1;
    clearTimeout(navTimer);
    clearTimeout(heartbeat); // one list of timers for both kinds (HTML spec)
    undo.forEach((f) => f());
  };

  view();
  ['pushState', 'replaceState'].forEach((method, original, patched) => {
    original = hist[method];
    patched = hist[method] = function () {
      var result = original.apply(this, arguments);
      navigated();
      return result;
    };
    // Restore only if nobody wrapped us since; otherwise `dead` makes our wrapper a pass-through.
    undo.push(() => hist[method] == patched && (hist[method] = original));
  });
  listen(w, 'popstate', navigated);
  if (hashRouting) listen(w, 'hashchange', navigated);
})(window, document, navigator, location, history);
