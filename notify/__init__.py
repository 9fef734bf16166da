"""Reports that arrive: mailed weekly and monthly reports, traffic alerts and webhooks.

The parts, in the order data flows through them:

* ``periods`` — which report periods and alert hours are complete, in the site's time zone;
* ``compose`` — a report's numbers, asked of the one query engine (``warehouse.query``);
* ``render`` — a report or an alert as a mail (plain text and simple HTML, nothing that tracks);
* ``mail`` — SMTP sending (``Settings.smtp_*``; without a host nothing is sent);
* ``alerts`` — an hour's visitors against the same hour a week before, once per crossing;
* ``webhooks`` — signed JSON POSTs, goal conversions found after loads, retries with backoff;
* ``schedule`` — the job the warehouse process runs every minute (``jobs.daemon``);
* ``cli`` — ``littlestats reports send`` to mail (or show) one report by hand.

The records (subscriptions, rules, webhooks, the delivery log) live in the control plane
(``littlestats.notify_store``); the API is ``api.notify``. See docs/reports.md.
"""
