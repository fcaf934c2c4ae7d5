"""Private files: the data dir holds message bodies, phone numbers and (in a file vault) secrets, so it
is created 0700 and the database files in it 0600, whatever the umask (issue 10.7).

SQLite creates ``-wal``/``-shm``/``-journal`` with the permissions of the database file, so making the
database file 0600 before SQLite first opens it covers them; files left by an older version are
tightened on every start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700. Parents that exist keep their mode."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a dir we do not own (a shared mount): leave it
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def ensure_private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, readable by the owner only; tighten an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.chmod(path, PRIVATE_FILE_MODE)
    return path


def ensure_private_sqlite(path: Path) -> Path:
    """The database file 0600 before SQLite opens it (its side files then inherit that mode), and any
    side file an older version left tightened too."""
    ensure_private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.exists():
            with contextlib.suppress(OSError):
                os.chmod(side, PRIVATE_FILE_MODE)
    return path


__all__ = ["ensure_private_dir", "ensure_private_file", "ensure_private_sqlite"]
