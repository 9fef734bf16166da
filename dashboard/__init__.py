"""The dashboard: a single-page app (``dashboard/web/``, built into ``dashboard/static/``) served by
``littlestats serve`` beside the API it reads."""
