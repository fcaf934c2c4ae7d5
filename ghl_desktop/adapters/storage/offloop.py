"""Storage off the event loop: one executor per database, and async facades over the repositories.

Every repository method is a short blocking transaction (SQLite ``synchronous=FULL`` waits for the
fsync; PostgreSQL for a network round trip). The services never call them on the loop thread: they
await the facades here (``core.ports.Async*``), which run the same method on the database's
:class:`StorageExecutor` and hand back its result or its exception unchanged.

The executor is sized from the engine's dialect:

- **SQLite: one thread.** SQLite has one writer at a time anyway; one thread makes every call a FIFO
  (a write submitted first commits first) and never makes two of our own writers wait on each other's
  lock (``busy_timeout``).
- **PostgreSQL: a small pool** (:data:`POSTGRES_WORKERS`), within the engine's connection pool
  (SQLAlchemy's default is 5 + 10 overflow), so reads of the UI and writes of the bridge overlap.

Durability is unchanged: ``await facade.enqueue(job)`` returns once the transaction committed (the
caller acknowledges only after that). A caller cancelled while its call runs does not stop the
call: the transaction finishes (commits or rolls back) on the worker; every write is idempotent on
its unique keys, so a cancelled caller that retries cannot duplicate anything.

:meth:`StorageExecutor.shutdown` (``Database.close`` calls it) refuses new calls, lets the submitted
ones finish (drain), and joins the threads, so quitting leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar, cast

from ghl_desktop.core.errors import StorageError
from ghl_desktop.core.ports import (
    AsyncContactRepository,
    AsyncJobQueue,
    AsyncLocationRepository,
    AsyncMessageLogQuery,
    AsyncMessageRepository,
    AsyncSessionRepository,
)
from ghl_desktop.core.routing import AsyncRoutingRepository
from ghl_desktop.core.storage_lane import BACKGROUND

log = logging.getLogger("ghl.storage")

T = TypeVar("T")
R = TypeVar("R")

#: worker threads for a PostgreSQL database (SQLite: always one)
POSTGRES_WORKERS = 4
THREAD_PREFIX = "ghl-db"


class StorageClosed(StorageError):
    """A storage call after the database's executor was shut down (the app is quitting)."""


def workers_for(dialect: str) -> int:
    """One writer thread for SQLite, a small pool for a server database."""
    return 1 if dialect == "sqlite" else POSTGRES_WORKERS


def _started(ready: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait(timeout=10)


class StorageExecutor:
    """The threads a database's calls run on. ``await run(fn, *args)`` from the loop; ``fn`` runs on a
    worker thread and its result (or exception) comes back to the awaiting coroutine."""

    def __init__(self, dialect: str, *, workers: int | None = None, name: str = THREAD_PREFIX) -> None:
        self.dialect = dialect
        self.workers = workers if workers is not None else workers_for(dialect)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._closed = False
        self._threads: set[int] = set()
        #: calls waiting for a worker: the loop's own first, then the job runner's (core.storage_lane)
        self._now: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = deque()
        self._later: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = deque()
        # start every worker now: the pool starts its threads lazily (one per submit that finds no idle
        # thread), and a thread start on a busy machine takes tens of ms, which would otherwise land on
        # the loop inside an awaited call. The barrier keeps each started worker busy until all exist,
        # so each submit starts a new one (a pool of one passes it at once).
        ready = threading.Barrier(self.workers)
        for _ in range(self.workers):
            self._pool.submit(self._call, _started, (ready,), {})

    @property
    def closed(self) -> bool:
        return self._closed

    def owns_current_thread(self) -> bool:
        """Whether the caller runs on one of this executor's worker threads."""
        return threading.get_ident() in self._threads

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        self._threads.add(threading.get_ident())
        return fn(*args, **kwargs)

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                background: bool) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise StorageClosed("the database is closed (the app is quitting)")
            (self._later if background else self._now).append((future, fn, args, kwargs))
            self._pool.submit(self._next)  # one worker turn per waiting call
        return future

    def _next(self) -> None:
        """(worker) Run the most urgent waiting call: any other one before the job runner's."""
        try:
            future, fn, args, kwargs = self._now.popleft()
        except IndexError:
            future, fn, args, kwargs = self._later.popleft()
        if not future.set_running_or_notify_cancel():
            return  # its awaiting task was cancelled before it started
        try:
            result = self._call(fn, args, kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker thread and await it (the job runner's calls, marked by
        ``core.storage_lane.BACKGROUND``, wait while others do)."""
        loop = asyncio.get_running_loop()
        future = self._submit(fn, args, kwargs, background=BACKGROUND.get())
        return await asyncio.wrap_future(future, loop=loop)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on a worker thread and wait for it here (code that is not on the loop: CLI tools,
        worker threads). Never call this on the event loop thread."""
        return self._submit(fn, args, kwargs, background=False).result()

    def shutdown(self, *, wait: bool = True) -> None:
        """Refuse new calls, finish the submitted ones, join the threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=wait)

    def __repr__(self) -> str:
        return f"StorageExecutor({self.dialect!r}, workers={self.workers}, closed={self._closed})"


class OffLoop(Generic[R]):
    """An async facade over one synchronous repository: ``await facade.method(...)`` runs
    ``repository.method(...)`` on the executor. Every public method of the repository is available,
    including those added later (the contract test checks the ``core.ports.Async*`` Protocols against
    the repositories' signatures)."""

    __slots__ = ("_executor", "_methods", "_target")

    def __init__(self, target: R, executor: StorageExecutor) -> None:
        self._target = target
        self._executor = executor
        self._methods: dict[str, Callable[..., Any]] = {}

    @property
    def target(self) -> R:
        """The synchronous repository (for code that already runs on the executor thread)."""
        return self._target

    @property
    def executor(self) -> StorageExecutor:
        return self._executor

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        cached = self._methods.get(name)
        if cached is not None:
            return cached
        method = getattr(self._target, name)
        if not callable(method):
            raise AttributeError(f"{type(self._target).__name__}.{name} is not a method")
        run = self._executor.run

        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await run(method, *args, **kwargs)

        self._methods[name] = wrapper
        return wrapper

    def __repr__(self) -> str:
        return f"OffLoop({self._target!r})"


def off_loop(target: Any, executor: StorageExecutor) -> Any:
    """``target`` behind an :class:`OffLoop` facade (typed by the caller as its ``Async*`` Protocol)."""
    return OffLoop(target, executor)


class AsyncStorage:
    """The async side of a :class:`~ghl_desktop.adapters.storage.Database`: its executor and a facade
    per repository (``locations``, ``sessions``, ``contacts``, ``messages``, ``jobs``, ``message_log``).
    Built once per database (``db.aio``); ``Database.close`` shuts the executor down."""

    def __init__(self, db: Any, executor: StorageExecutor | None = None) -> None:
        self.executor = executor or StorageExecutor(db.engine.dialect.name)
        ex = self.executor
        self.locations = cast(AsyncLocationRepository, OffLoop(db.locations, ex))
        self.sessions = cast(AsyncSessionRepository, OffLoop(db.sessions, ex))
        self.contacts = cast(AsyncContactRepository, OffLoop(db.contacts, ex))
        self.messages = cast(AsyncMessageRepository, OffLoop(db.messages, ex))
        self.jobs = cast(AsyncJobQueue, OffLoop(db.jobs, ex))
        self.message_log = cast(AsyncMessageLogQuery, OffLoop(db.message_log, ex))
        self.routing = cast(AsyncRoutingRepository, OffLoop(db.routing, ex))
        #: the blocking repositories themselves, for functions handed to :meth:`run` (several calls that
        #: belong together, one hop to the executor); never called on the loop thread
        self.sync = db
        self._db = db

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Any other storage work (several repository calls that belong together) on the executor."""
        return await self.executor.run(fn, *args, **kwargs)

    def shutdown(self, *, wait: bool = True) -> None:
        self.executor.shutdown(wait=wait)

    def __repr__(self) -> str:
        return f"AsyncStorage({self._db!r}, {self.executor!r})"


__all__ = [
    "POSTGRES_WORKERS",
    "AsyncStorage",
    "OffLoop",
    "StorageClosed",
    "StorageExecutor",
    "off_loop",
    "workers_for",
]
