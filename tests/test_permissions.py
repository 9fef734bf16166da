"""`make_private`: a data directory left readable is made the user's alone, and says so."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from littlestats.permissions import make_private


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_loose_data_directory_is_made_private_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    (data / "raw" / "site_id=a").mkdir(parents=True)
    for d in (data, data / "raw", data / "raw" / "site_id=a"):
        os.chmod(d, 0o755)
    loose = data / "raw" / "site_id=a" / "part-1.parquet"
    loose.write_bytes(b"x")
    os.chmod(loose, 0o644)
    strict = data / "admin-token"
    strict.write_text("t")
    os.chmod(strict, 0o400)  # already private: left as it is
    outside = tmp_path / "outside.txt"
    outside.write_text("o")
    os.chmod(outside, 0o644)
    (data / "link").symlink_to(outside)  # not followed

    with caplog.at_level(logging.WARNING, logger="littlestats.permissions"):
        fixed = make_private(data)
    assert sorted(fixed) == sorted([data, data / "raw", data / "raw" / "site_id=a", loose])
    assert (mode(data), mode(data / "raw"), mode(loose), mode(strict), mode(outside)) == (0o700, 0o700, 0o600, 0o400, 0o644)
    assert "4 entries were readable by other users" in caplog.text
    assert make_private(data) == []
