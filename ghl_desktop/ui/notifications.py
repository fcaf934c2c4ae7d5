"""The platform's notification service, through the ``desktop-notifier`` library.

Linux: ``org.freedesktop.Notifications`` on the session bus (its ``Notify`` method, over D-Bus with
dbus-fast); macOS: Notification Center (from an app bundle); Windows 10+: toasts. The notices stay in
the desktop's notification history, unlike a tray balloon.

:class:`DesktopNotifications.send` says which way a notice went: ``"service"`` when the platform
service took it, else ``"none"`` — the caller then falls back to the tray balloon. desktop-notifier
never raises for a failed send (it logs a warning); a notice counts as delivered only when its
``on_dispatched`` callback ran, which happens after the service answered. Clicking the notice (the
D-Bus ``default`` action, a click on a toast) calls ``on_clicked`` with the notice's own callback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("ghl.ui.notifications")

#: a service that does not answer in this time counts as absent (the tray balloon is used)
SEND_TIMEOUT_SECONDS = 5.0


def session_bus_reachable(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Linux/BSD: is there a session bus to ask (``DBUS_SESSION_BUS_ADDRESS``, or an X display whose
    bus can be looked up)? Other platforms: True (their services are not on D-Bus)."""
    plat = platform or sys.platform
    if plat.startswith(("win", "darwin")):
        return True
    env = os.environ if environ is None else environ
    return bool(env.get("DBUS_SESSION_BUS_ADDRESS") or env.get("DISPLAY"))


class DesktopNotifications:
    def __init__(self, app_name: str = "ghl-desktop", icon_path: Path | None = None) -> None:
        self.app_name = app_name
        self.icon_path = icon_path
        # desktop-notifier logs every failed send with a traceback at WARNING; one line of ours is enough
        logging.getLogger("desktop_notifier").setLevel(logging.ERROR)
        self._last_failure: str | None = None
        self._notifier: Any = None
        self._unusable: str | None = None
        #: the desktop-notifier backend class name ("DBusDesktopNotifier", …), once created
        self.backend = ""

    def _make(self) -> Any:
        if self._notifier is not None or self._unusable is not None:
            return self._notifier
        try:
            from desktop_notifier import DesktopNotifier, Icon
        except ImportError as exc:  # not installed (a trimmed bundle): the tray balloon it is
            self._unusable = f"desktop-notifier is not installed ({exc})"
            log.warning("desktop notifications unavailable: %s", self._unusable)
            return None
        icon = Icon(path=self.icon_path) if self.icon_path is not None and self.icon_path.exists() else None
        try:
            self._notifier = DesktopNotifier(app_name=self.app_name, app_icon=icon)
        except Exception as exc:
            self._unusable = f"no notification backend: {exc}"
            log.warning("desktop notifications unavailable: %s", self._unusable)
            return None
        self.backend = type(getattr(self._notifier, "_backend", None)).__name__
        if self.backend == "DummyNotificationCenter":  # e.g. macOS outside an app bundle
            self._unusable = "this platform has no notification service desktop-notifier can use here"
            log.info("desktop notifications unavailable: %s", self._unusable)
            self._notifier = None
        return self._notifier

    @property
    def unusable(self) -> str | None:
        """Why the platform service cannot be used at all (None: it is tried for each notice)."""
        self._make()
        return self._unusable

    async def send(
        self,
        title: str,
        text: str,
        *,
        critical: bool = False,
        on_clicked: Callable[[], Any] | None = None,
    ) -> str:
        """``"service"`` when the platform's notification service took the notice, else ``"none"``."""
        if not session_bus_reachable():
            self._failed("no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
            return "none"
        notifier = self._make()
        if notifier is None:
            return "none"
        from desktop_notifier import Urgency

        dispatched = asyncio.Event()
        try:
            await asyncio.wait_for(notifier.send(
                title=title, message=text, urgency=Urgency.Critical if critical else Urgency.Normal,
                on_dispatched=dispatched.set, on_clicked=on_clicked,
            ), SEND_TIMEOUT_SECONDS)
        except TimeoutError:
            self._failed(f"the notification service did not answer within {SEND_TIMEOUT_SECONDS:.0f} s")
            return "none"
        except Exception as exc:
            self._failed(f"desktop notification failed: {exc}")
            return "none"
        if not dispatched.is_set():
            self._failed("the notification service did not take the notice (none on the session bus?)")
            return "none"
        self._last_failure = None
        return "service"

    def _failed(self, why: str) -> None:
        if why != self._last_failure:  # once per kind of failure, not once per notice
            log.info("desktop notifications: %s; using the tray balloon", why)
        self._last_failure = why

    async def reset(self) -> None:
        """Forget the connection: the next notice connects again (to the session bus of that moment)."""
        await self.close()
        self._notifier = None
        self._unusable = None

    async def close(self) -> None:
        """Drop the D-Bus connection (the window is closing)."""
        backend = getattr(self._notifier, "_backend", None)
        bus = getattr(backend, "bus", None)
        if bus is not None:
            try:
                bus.disconnect()
            except Exception:
                log.debug("closing the notification bus failed", exc_info=True)


__all__ = ["SEND_TIMEOUT_SECONDS", "DesktopNotifications", "session_bus_reachable"]
