"""The one QObject that listens to the services: EventBus events in, Qt signals out.

Services are Qt-free and publish frozen dataclasses on the :class:`EventBus`; widgets connect to the
signals here and never subscribe to the bus themselves. Everything runs on the loop thread (qasync
runs asyncio on Qt's main thread), so the signals are delivered directly.

Signals:
    message_logged(Message)      a message was stored or changed (services.bridge.MessageLogged)
    locations_changed(object)    HighLevel installed/uninstalled the app somewhere (LocationsChanged)
    session_changed(object)      a WhatsApp number's stored row changed (services.events.SessionChanged)
    session_qr(object)           a fresh QR code for a number being linked (SessionQr)
    session_pair_code(object)    a pairing code to type on the phone (SessionPairCode)
    session_removed(str)         a number was removed (SessionRemoved → its id)
    relay_state_changed(object)  the link to ghl-relay changed (relay.client.RelayStateChanged)
    health_changed(object)       the computed health changed (services.health.HealthChanged → its HealthSnapshot)
    notice_requested(object)     a debounced desktop notice to show (services.health.NoticeRequested)
    event_published(object)      every event, for panels that refresh on any change (status counts)

New event types are routed with :meth:`ServiceBridge.route` by the code that owns the signal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

from ghl_desktop.core.events import EventBus


class ServiceBridge(QObject):
    message_logged = Signal(object)
    locations_changed = Signal(object)
    session_changed = Signal(object)
    session_qr = Signal(object)
    session_pair_code = Signal(object)
    session_removed = Signal(str)
    relay_state_changed = Signal(object)
    health_changed = Signal(object)
    notice_requested = Signal(object)
    event_published = Signal(object)

    def __init__(self, bus: EventBus, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._unsubscribe: list[Callable[[], None]] = []
        self._unsubscribe.append(bus.subscribe(object, self.event_published.emit))
        self._bus = bus
        self._route_known_events()

    def _route_known_events(self) -> None:
        from ghl_desktop.relay.client import RelayStateChanged
        from ghl_desktop.services.bridge import LocationsChanged, MessageLogged
        from ghl_desktop.services.events import SessionChanged, SessionPairCode, SessionQr, SessionRemoved
        from ghl_desktop.services.health import HealthChanged, NoticeRequested

        self.route(MessageLogged, self.message_logged, lambda event: event.message)
        self.route(LocationsChanged, self.locations_changed)
        self.route(SessionChanged, self.session_changed, lambda event: event.session)
        self.route(SessionQr, self.session_qr)
        self.route(SessionPairCode, self.session_pair_code)
        self.route(SessionRemoved, self.session_removed, lambda event: event.session_id)
        self.route(RelayStateChanged, self.relay_state_changed)
        self.route(HealthChanged, self.health_changed, lambda event: event.snapshot)
        self.route(NoticeRequested, self.notice_requested)

    def route(
        self,
        event_type: type[Any],
        signal: SignalInstance,
        payload: Callable[[Any], object] | None = None,
    ) -> None:
        """Emit ``signal`` (with ``payload(event)``, or the event itself) for every ``event_type``."""

        def emit(event: Any) -> None:
            signal.emit(payload(event) if payload is not None else event)

        self._unsubscribe.append(self._bus.subscribe(event_type, emit))

    def detach(self) -> None:
        """Stop listening (the window is closing; the bus may outlive it in tests)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()


__all__ = ["ServiceBridge"]
