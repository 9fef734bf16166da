"""One module per foreign format: each turns its rows into our raw events (``interop.events``)."""
