"""The web dashboard: login, the pages' app shell and its built assets, served by ``littlestats serve``.

The pages are a client of the public query API like any other (``/api/v2/…``, authenticated by the
session cookie plus an ``X-CSRF-Token`` header); this package only logs people in and out, serves the
shell and assets, and sets the security headers. The single-page app's sources are in
``dashboard/web/``, its build output in ``dashboard/static/``.
"""
