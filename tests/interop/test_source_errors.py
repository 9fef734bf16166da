"""Malformed input: every source stops at the first row it cannot read, naming the file, the line
(or the table row) and the column, and nothing is written."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from interop.events import ImportFormatError, SourceContext, parse_time
from interop.sources import goatcounter, littlestats_v1, littlestats_v2, umami
from littlestats.controlplane import Site, SiteSettings
from tests.interop import formats as F

SITE = Site(id="s1", domain_key="k1", domain="example.com", name="x", timezone="UTC",
            retention_days=0, settings=SiteSettings(), secret=b"k" * 32, created_at="2025-01-01")


def _read(module: object, path: Path) -> list[dict]:
    ctx = SourceContext(site=SITE, import_id="impT", file_name=path.name)
    return list(module.read(path, ctx))  # type: ignore[attr-defined]


def _goat(tmp_path: Path, rows: list[list[str]], raw_tail: str = "") -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(F.GOAT_HEADER)
    writer.writerows(rows)
    path = tmp_path / "goat.csv"
    path.write_text(buf.getvalue() + raw_tail)
    return path


def test_goatcounter_bad_value_names_line_and_column(tmp_path: Path) -> None:
    rows = F.goat_rows(F.history(visitors=3, seed=1))
    rows[1][2] = "maybe"  # Event
    with pytest.raises(ImportFormatError, match=r"^goat\.csv, line 3, column Event: 'maybe' is not true or false$"):
        _read(goatcounter, _goat(tmp_path, rows))


def test_goatcounter_quoted_newlines_keep_line_numbers_right(tmp_path: Path) -> None:
    rows = F.goat_rows(F.history(visitors=3, seed=1))
    rows[0][1] = "Hello,\nworld"  # a quoted title over two lines
    rows[1][8] = "https://example.org/"
    rows[1][9] = "x"  # Referrer scheme on the 2nd data row, which starts on line 4
    with pytest.raises(ImportFormatError, match=r"line 4, column Referrer scheme"):
        _read(goatcounter, _goat(tmp_path, rows))


def test_goatcounter_unterminated_quote_and_field_count(tmp_path: Path) -> None:
    rows = F.goat_rows(F.history(visitors=2, seed=1))
    with pytest.raises(ImportFormatError, match=rf"line {len(rows) + 2}: 3 fields; expected 14"):
        _read(goatcounter, _goat(tmp_path, rows, "/a,b,c\n"))
    with pytest.raises(ImportFormatError, match=r"malformed CSV"):
        _read(goatcounter, _goat(tmp_path, rows, '/a,"unterminated\n'))


def test_goatcounter_version_1_and_other_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    path.write_text("1,Path,Title,Event,Bot,Session,FirstVisit,Referrer,Referrer scheme,Browser,Screen size,Location,Date\n")
    with pytest.raises(ImportFormatError, match="version 1 GoatCounter export"):
        _read(goatcounter, path)
    path.write_text("date,views\n2024-01-01,3\n")
    with pytest.raises(ImportFormatError, match=r"line 1: not a GoatCounter CSV export"):
        _read(goatcounter, path)


def test_umami_missing_column_and_bad_type(tmp_path: Path) -> None:
    path = tmp_path / "website_event.csv"
    path.write_text("event_id,created_at,url_path,event_type\n1,2025-01-01 00:00:00+00,/,1\n")
    with pytest.raises(ImportFormatError, match=r"line 1, column session_id: missing from the header"):
        _read(umami, path)
    path.write_text("session_id,created_at,url_path,event_type\n"
                    "s,2025-01-01 00:00:00+00,/,1\n"
                    "s,2025-01-01 00:00:01+00,/,7\n")
    with pytest.raises(ImportFormatError, match=r"line 3, column event_type: '7' is not 1"):
        _read(umami, path)


def test_umami_times_with_offsets_are_utc(tmp_path: Path) -> None:
    path = tmp_path / "website_event.csv"
    path.write_text("session_id,created_at,url_path,event_type,url_query\n"
                    "s,2025-01-01 05:00:00-05,/a,1,\n"
                    "s,2025-01-01 10:00:00.250+00,/b,1,utm_source=news\n"
                    "s,2025-01-01 10:00:01,/c,1,\n")
    events = _read(umami, path)
    assert [e["ts"].isoformat() for e in events] == [
        "2025-01-01T10:00:00+00:00", "2025-01-01T10:00:00.250000+00:00", "2025-01-01T10:00:01+00:00"]
    assert events[1]["source"] == "news" and events[0]["query"] is None


def test_v2_dump_with_a_broken_statement_names_its_line(tmp_path: Path) -> None:
    good = tmp_path / "good.sql"
    F.write_v2(good, F.history(visitors=2, seed=1), "example.com", dump=True)
    lines = good.read_text().splitlines()
    broken = next(i for i, line in enumerate(lines) if line.startswith('INSERT INTO "events"'))
    lines[broken] = lines[broken].replace("VALUES(", "VALUES(oops ", 1)
    path = tmp_path / "d1-export.sql"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFormatError, match=rf"^d1-export\.sql, line {broken + 1}: SQL statement cannot be read"):
        _read(littlestats_v2, path)


def test_v2_bad_time_names_the_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d1.sqlite"
    F.write_v2(path, F.history(visitors=2, seed=1), "example.com")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET created_at = 'soon' WHERE id = 2")
    with pytest.raises(ImportFormatError, match=r"^d1\.sqlite, events row id 2, column created_at: 'soon' is not a time"):
        _read(littlestats_v2, path)


def test_v2_heartbeats_and_exits_are_never_pageviews(tmp_path: Path) -> None:
    path = tmp_path / "d1.sqlite"
    hits = F.history(visitors=5, seed=2)
    F.write_v2(path, hits, "example.com")
    events = _read(littlestats_v2, path)
    assert sum(e["type"] == "pageview" for e in events) == sum(h.kind == "pageview" for h in F.counted(hits))
    assert {e["type"] for e in events if e["engagement_ms"]} == {"engagement", "page_exit"}
    assert all(e["pathname"] != "/elsewhere" for e in events)  # the other site's


def test_v1_unknown_event_type_and_no_ip_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    F.write_v1(path, F.history(visitors=3, seed=1), "example.com")
    events = _read(littlestats_v1, path)
    assert all("198.51.100" not in repr(e) for e in events)  # no IP in what is written
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events_example_com SET event_type = 'click' WHERE id = 3")
    with pytest.raises(ImportFormatError, match=r"events_example_com row id 3, column event_type"):
        _read(littlestats_v1, path)


def test_parse_time_accepts_what_the_tools_write() -> None:
    assert parse_time("2025-03-01 10:00:00").isoformat() == "2025-03-01T10:00:00+00:00"
    assert parse_time("2025-03-01T12:00:00+02:00").isoformat() == "2025-03-01T10:00:00+00:00"
    assert parse_time("2025-03-01T10:00:00Z").isoformat() == "2025-03-01T10:00:00+00:00"
    assert parse_time("2025-03-01 15:30:00+0530").isoformat() == "2025-03-01T10:00:00+00:00"
    assert parse_time("1740823200000").isoformat() == "2025-03-01T10:00:00+00:00"
    with pytest.raises(ValueError):
        parse_time("")
