"""A tiny, Qt-free publish/subscribe bus for immutable domain events.

Services publish frozen dataclasses; the UI's bridge re-emits them as Qt signals; the tray and
tests subscribe the same way. Handlers run synchronously in publish order; an async handler is
scheduled on the running loop and its task kept until it ends. A failing handler is logged and
never stops the others.
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ghl_desktop.core.tasks import BackgroundTasks

log = logging.getLogger("ghl.events")

E = TypeVar("E")
Handler = Callable[[Any], "Awaitable[None] | None"]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)
        self._tasks = BackgroundTasks(log, "async event handler")

    def subscribe(self, event_type: type[E], handler: Callable[[E], Awaitable[None] | None]) -> Callable[[], None]:
        """Call ``handler`` for every published event that is an instance of ``event_type``.

        Returns a function that removes the subscription."""
        self._handlers[event_type].append(handler)

        def unsubscribe() -> None:
            try:
                self._handlers[event_type].remove(handler)
            except ValueError:
                pass

        return unsubscribe

    def publish(self, event: object) -> None:
        for event_type, handlers in list(self._handlers.items()):
            if not isinstance(event, event_type):
                continue
            for handler in list(handlers):
                try:
                    result = handler(event)
                except Exception:
                    log.exception("event handler %r failed for %s", handler, type(event).__name__)
                    continue
                if inspect.isawaitable(result):
                    self._track(result)

    def _track(self, awaitable: Awaitable[None]) -> None:
        async def run() -> None:
            await awaitable

        self._tasks.spawn(run())

    async def drain(self) -> None:
        """Wait for every async handler started so far (used on shutdown and in tests)."""
        await self._tasks.drain()
