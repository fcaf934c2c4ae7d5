"""Storage trouble, said plainly (issue 10.8): "disk full" instead of a traceback.

``is_disk_full`` recognises the ways a full disk surfaces (SQLite's ``SQLITE_FULL`` "database or disk
is full", ``ENOSPC``/``EDQUOT`` from the OS, PostgreSQL's "could not extend file" / "No space left")
anywhere in an exception's cause chain. :class:`StorageMonitor` turns failures and successes of the
durable writes (webhook intake, incoming WhatsApp messages) into events on the bus:

- :class:`StorageProblem` ``(text)`` when writes start failing (the window and tray may show ``text``;
  ``disk_full`` says whether freeing space is the cure), published again only when the text changes;
- :class:`StorageRecovered` when a write succeeds again.

``/healthz`` of the direct endpoint reports ``monitor.problem`` (503), the intake puts the same text
in its 429 body, and ``ghl-desktop doctor`` checks the free space of the data dir.

Incoming WhatsApp messages while the disk is full (``SessionService._store_retrying``): the write is
retried with backoff (1 s doubling to 30 s) until it works, and the message stays unacknowledged
meanwhile; events behind it wait in order. With the simulated transport that means WhatsApp keeps
it. With the real engine (neonize acknowledges to WhatsApp before our handler runs) the message is
kept (a) in the write-ahead journal row written on the Go callback thread, when that write still
succeeded — it is replayed at the next start even after a kill — and (b) in any case in memory by
the retrying handler until space returns. Only a process killed while the disk is full AND the
journal write itself failed loses it: at that point no durable place exists; the journal failure
is logged and the StorageProblem is on screen.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("ghl.storage")

_FULL_TEXT = ("database or disk is full", "no space left on device", "disk quota exceeded",
              "could not extend file", "sqlite_full")


def is_disk_full(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = f"{exc} {getattr(exc, 'detail', '') or ''}".lower()
        if any(marker in text for marker in _FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "orig", None)
    return False


def describe_storage_failure(exc: BaseException) -> str:
    if is_disk_full(exc):
        return "disk full: the database cannot write; free some disk space (nothing is lost, it is retried)"
    return "the database cannot write right now (it is retried)"


@dataclass(frozen=True)
class StorageProblem:
    text: str
    disk_full: bool


@dataclass(frozen=True)
class StorageRecovered:
    pass


class StorageMonitor:
    """Remembers whether durable writes currently fail, and announces the changes."""

    def __init__(self, bus: Any | None = None) -> None:
        self._bus = bus
        self.problem: StorageProblem | None = None

    def failed(self, exc: BaseException) -> StorageProblem:
        problem = StorageProblem(describe_storage_failure(exc), is_disk_full(exc))
        if problem != self.problem:
            self.problem = problem
            log.error("storage problem: %s", problem.text)
            if self._bus is not None:
                self._bus.publish(problem)
        return problem

    def ok(self) -> None:
        if self.problem is not None:
            self.problem = None
            log.info("storage writes work again")
            if self._bus is not None:
                self._bus.publish(StorageRecovered())


__all__ = ["StorageMonitor", "StorageProblem", "StorageRecovered", "describe_storage_failure", "is_disk_full"]
