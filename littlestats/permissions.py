"""The data directory is private to the user running LittleStats.

It holds the control plane (token hashes, the per-site secrets, the secret that signs live-feed
tokens), the admin token and every event: no other local user may read any of it. Every process
runs with a umask of ``077`` (set by the ``littlestats`` command before anything is created, and
inherited by gunicorn's workers, the warehouse process and the live service), so every directory
it makes is ``700`` and every file ``600``; ``make_private`` takes, at start, the group and other
permissions away from what an earlier version or a hand-made directory left looser.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
LOGGED_FIXES = 20  # entries named in the log; the rest are counted


def use_private_umask() -> None:
    """Make every file and directory this process (and its children) creates private."""
    os.umask(PRIVATE_UMASK)


def make_private(data_dir: Path) -> list[Path]:
    """Take group and other permissions away from ``data_dir`` and everything in it.

    A ``755`` directory becomes ``700``, a ``644`` file ``600``: only the group and other bits
    go, so a stricter mode (``400``) is left as it is. Symbolic links are not followed. Returns
    what was changed, and logs it (the first ``LOGGED_FIXES`` by name, then how many in all).
    """
    fixed: list[Path] = []

    def fix(path: Path, mode: int) -> None:
        current = stat.S_IMODE(mode)
        if current & PRIVATE_UMASK:
            new = current & ~PRIVATE_UMASK  # 755 → 700, 644 → 600; a stricter mode is left alone
            try:
                os.chmod(path, new)
            except FileNotFoundError:
                return  # removed meanwhile (a sealed WAL segment, a rotated metrics file)
            fixed.append(path)
            if len(fixed) <= LOGGED_FIXES:  # an upgraded directory may hold thousands of files
                log.warning("made %s private: mode %o was %o", path, new, current)

    fix(data_dir, os.lstat(data_dir).st_mode)
    for root, dirs, files in os.walk(data_dir):
        for name in (*dirs, *files):
            path = Path(root) / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(mode):
                fix(path, mode)
    if fixed:
        log.warning("data directory %s: %d entries were readable by other users and are private now",
                    data_dir, len(fixed))
    return fixed
