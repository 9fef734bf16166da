"""The committed build is the build of the committed source, and it stays small."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

TRACKER = Path(__file__).resolve().parents[2] / "tracker"


def test_committed_build_matches_the_source() -> None:
    info = json.loads((TRACKER / "build.json").read_text())
    source = (TRACKER / info["source"]).read_bytes()
    built = (TRACKER / "tracker.js").read_bytes()
    assert hashlib.sha256(source).hexdigest() == info["source_sha256"], (
        "tracker/src/tracker.js changed since the last build: run scripts/build-tracker"
    )
    assert hashlib.sha256(built).hexdigest() == info["output_sha256"], (
        "tracker/tracker.js was edited by hand: edit the source and run scripts/build-tracker"
    )


def test_tracker_is_at_most_2_kb_gzipped() -> None:
    built = (TRACKER / "tracker.js").read_bytes()
    size = len(gzip.compress(built, compresslevel=9))
    assert size <= 2048, f"tracker.js is {size} bytes gzipped"
    assert built.isascii()
