"""Reading a CSV export row by row with the line each row starts on (quoted fields may span
lines) and how far into the file the reader is (progress)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from interop.events import SourceContext


def rows(path: Path, ctx: SourceContext) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of every non-blank record, the header included."""
    size = path.stat().st_size or 1
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, strict=True)
        start = 1
        try:
            for fields in reader:
                line, start = start, reader.line_num + 1
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank lines are allowed
                ctx.fraction = min(1.0, raw.tell() / size)
                yield line, fields
        except csv.Error as exc:
            raise ctx.error(start, None, f"malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise ctx.error(start, None, f"not UTF-8 text ({exc})") from None
