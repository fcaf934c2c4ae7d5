"""Private files: the data dir holds message bodies, phone numbers and (in a file vault) secrets, so it
is created 0700 and the database files in it 0600, whatever the umask (issue 10.7).

SQLite creates ``-wal``/``-shm``/``-journal`` with the permissions of the database file, so making the
database file 0600 before SQLite first opens it covers them; files left by an older version are
tightened on every start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def ensure_private_dir(path: Path, *, tighten_existing: bool = True) -> Path:
    """Create ``path`` (and parents) 0700. Parents that exist keep their mode.

    An existing ``path`` is tightened to 0700 (a data dir an older version left 0755) unless
    ``tighten_existing`` is False — for a folder the user only named as the place of a file (a database
    URL, say ``sqlite:////srv/shared/ghl.db``), which is theirs, not ours — and never when it has the
    sticky bit: a shared folder such as ``/tmp`` closed to 0700 breaks every other user and program."""
    existed = path.is_dir()
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if existed:
        if not tighten_existing:
            return path
        with contextlib.suppress(OSError):
            if path.stat().st_mode & stat.S_ISVTX:
                return path
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
