"""The intake's group commit: messages the transports hand over at the same time are stored in ONE
transaction (``SqlMessageRepository.record_many``), each caller answered once that transaction
committed — so a message is still stored before its transport acknowledges it, only the commit
(SQLite's fsync, PostgreSQL's round trip) is shared.

No timer: a batch is whatever arrived while the previous one was on the storage thread, so a lone
message is stored at once and a burst (several chats of a number at once, several numbers) costs one
commit per batch instead of one per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ghl_desktop.core.models import Message, NewJob

log = logging.getLogger("ghl.bridge.intake")

#: messages stored in one transaction at most
BATCH_LIMIT = 64

Item = tuple[Message, NewJob | None]
Result = tuple[Message, bool]


class GroupCommit:
    """``await record(message, job)`` as ``messages.record`` does, batched with concurrent callers.

    ``run`` runs a function on the storage thread (``Repositories.run``); ``record_many`` stores a
    list of (message, job) in one transaction and returns, per item, its result or its error."""

    def __init__(self, run: Callable[..., Awaitable[Any]],
                 record_many: Callable[[Sequence[Item]], Sequence[Result | BaseException]]) -> None:
        self._run = run
        self._record_many = record_many
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: batches written and messages in them (bench / tests)
        self.batches = 0
        self.messages = 0

    async def record(self, message: Message, job: NewJob | None = None) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append(((message, job), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await asyncio.shield(future)  # a cancelled caller does not take the batch down

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:BATCH_LIMIT], self._waiting[BATCH_LIMIT:]
            try:
                results = await self._run(self._record_many, [item for item, _ in batch])
            except BaseException as exc:  # the transaction itself failed: every caller learns it
                for _, future in batch:
                    _fail(future, exc)
                if isinstance(exc, asyncio.CancelledError):
                    for _, future in self._waiting:
                        future.cancel()
                    self._waiting = []
                    raise
                continue
            self.batches += 1
            self.messages += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    _fail(future, result)
                else:
                    future.set_result(result)


def _fail(future: asyncio.Future[Result], exc: BaseException) -> None:
    """Hand ``exc`` to the caller awaiting ``future`` (marked retrieved: a caller cancelled meanwhile
    does not make asyncio log it as never retrieved)."""
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
        return
    future.set_exception(exc)
    future.exception()
