"""The process's resources, built once: settings, logging, the secret store, the database, the event
bus and the background tasks — each exactly once, handed to whoever needs it. No module globals:
tests build as many :class:`App` objects as they like, each with its own data dir.

The services are composed in one place over an App: ``runtime.BridgeRuntime`` (HighLevel client,
WhatsApp sessions, bridge, job runner, webhook intake/endpoint, relay link). The window
(``ui/main.py``), ``headless`` and the self-test all build ``App`` + ``BridgeRuntime`` and nothing else.

Lifecycle::

    app = await App.open(settings) # logging, secrets (may raise VaultLocked), database — on a thread
    # (App(settings) does the same synchronously: before the loop runs, scripts, tests)
    runtime = BridgeRuntime(app, transports)
    await runtime.start()          # the services, on the running loop
    ...
    await runtime.stop()
    await app.aclose()             # cancels and awaits every task, drains the bus, closes the database

Construction order matters: logging is configured before anything imports neonize (its import calls
``logging.basicConfig``), and the secret store is opened before the database so a locked vault stops
the start before any file is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TextIO

from ghl_desktop.adapters.secrets import open_secret_store
from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage.secrets_db import PgRefreshLock, cluster_token_parts, is_cluster_url
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.files import ensure_private_dir
from ghl_desktop.core.models import JobState
from ghl_desktop.core.ports import SecretStore
from ghl_desktop.core.tasks import BackgroundTasks
from ghl_desktop.logging_setup import LoggingSetup, configure_logging

log = logging.getLogger("ghl.app")

CLIENT_SECRET_KEY = "app:client_secret"


@dataclass(frozen=True, slots=True)
class AppStatus:
    """What the status bar and the doctor tell the user about this running instance."""

    secret_store: str
    database: str
    locations: int
    sessions: int
    pending_jobs: int
    sandbox: bool


def display_database_url(url: str) -> str:
    """The database location without any password (SQLite: the file path)."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
    return url


def with_stored_client_secret(settings: Settings, secrets: SecretStore) -> Settings:
    """The client secret entered in Settings lives in the secret store; the environment wins."""
    if settings.client_id and not settings.client_secret:
        try:
            stored = secrets.get(CLIENT_SECRET_KEY)
        except Exception:
            log.warning("could not read the stored client secret", exc_info=True)
            stored = None
        if stored:
            return replace(settings, client_secret=stored)
    return settings


class App:
    """Owns every long-lived part; nothing else constructs them.

    Parts may be injected (tests pass a MemorySecretStore or an already-open Database); whatever is
    not injected is built from ``settings``. The App closes only what it opened itself."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        secrets: SecretStore | None = None,
        passphrase: str | None = None,
        database: Database | None = None,
        logging_setup: LoggingSetup | None = None,
        console_log: bool | TextIO = True,
        sandbox: bool = False,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.sandbox = sandbox or not self.settings.has_ghl_credentials
        ensure_private_dir(self.settings.home)  # message bodies, phone numbers, maybe the file vault
        self._owns_logging = logging_setup is None
        self.logging = (
            logging_setup if logging_setup is not None else configure_logging(self.settings, console=console_log)
        )
        self._owns_db = database is None
        #: set on PostgreSQL (a cluster of workers): tokens are sealed in the database and refreshed
        #: under the cluster's lock (adapters/storage/secrets_db.py); None on SQLite
        self.token_cluster: PgRefreshLock | None = None
        opened: Database | None = None
        try:
            db_url = database.url if database is not None else self.settings.database_url
            cluster = secrets is None and is_cluster_url(db_url)
            if not cluster:
                self.secrets: SecretStore = (
                    secrets if secrets is not None else open_secret_store(self.settings, passphrase)
                )
                self._register_known_secrets()
            if database is None:
                database = opened = open_database(self.settings.database_url, migrate=True)
            self.db: Database = database
            if cluster:
                parts = cluster_token_parts(self.db)  # SecretKeyMissing without GHL_DESKTOP_SECRET_KEY
                assert parts is not None
                self.secrets, self.token_cluster = parts
                self._register_known_secrets()
        except BaseException:
            if opened is not None:
                opened.close()
            if self._owns_logging:
                self.logging.close()
            raise
        self.bus = EventBus()
        self._tasks = BackgroundTasks(log)
        self._closed = False
        log.info(
            "ghl-desktop ready: data dir %s, database %s, secrets in %s%s",
            self.settings.home,
            display_database_url(self.db.display_url),
            self.secrets.description,
            " (sandbox mode)" if self.sandbox else "",
        )

    @classmethod
    async def open(cls, settings: Settings | None = None, **parts: Any) -> App:
        """:class:`App` built on a worker thread: opening the secret store (keyring: D-Bus; vault: a
        file), the database and its migrations take tens to hundreds of ms, which must not land on the
        running loop (docs/event-loop.md). Same arguments, same errors as the constructor. If the
        caller is cancelled meanwhile, the open finishes on its thread and is closed again."""
        opening = asyncio.ensure_future(asyncio.to_thread(functools.partial(cls, settings, **parts)))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                app = await opening
                await app.aclose()
            raise

    def _register_known_secrets(self) -> None:
        """Make the log redactor blank out the client secret even where no pattern would catch it."""
        self.logging.redactor.add_secret(self.settings.client_secret)
        try:
            self.logging.redactor.add_secret(self.secrets.get(CLIENT_SECRET_KEY))
        except Exception:
            log.warning("could not read the stored client secret to protect the logs", exc_info=True)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return self._tasks.snapshot()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run background work owned by the app: the task is kept (so it is not garbage collected),
        its failure is logged, and :meth:`aclose` cancels and awaits it."""
        if self._closed:
            coro.close()
            raise RuntimeError("the app is closed")
        return self._tasks.spawn(coro, name=name)

    def status(self) -> AppStatus:
        return AppStatus(
            secret_store=self.secrets.description,
            database=display_database_url(self.db.display_url),
            locations=len(self.db.locations.list()),
            sessions=len(self.db.sessions.list()),
            pending_jobs=self.db.jobs.count(JobState.PENDING.value),
            sandbox=self.sandbox,
        )

    async def aclose(self) -> None:
        """Cancel and await every task, let event handlers finish, close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task, result in await self._tasks.cancel_all():
            log.warning("task %s ended with %r during shutdown", task.get_name(), result)
        await self.bus.drain()
        if self._owns_db:
            await asyncio.to_thread(self.db.close)  # drains the storage executor, joins its threads
        log.info("closed")
        if self._owns_logging:
            self.logging.close()


__all__ = ["App", "AppStatus", "display_database_url", "with_stored_client_secret"]
