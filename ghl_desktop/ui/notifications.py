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
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("ghl.ui.notifications")

#: a service that does not answer in this time counts as absent (the tray balloon is used)
SEND_TIMEOUT_SECONDS = 5.0


class DesktopNotifications:
    def __init__(self, app_name: str = "ghl-desktop", icon_path: Path | None = None) -> None:
        self.app_name = app_name
        self.icon_path = icon_path
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
            log.warning("the notification service did not answer within %.0f s", SEND_TIMEOUT_SECONDS)
            return "none"
        except Exception:
            log.warning("desktop notification failed", exc_info=True)
            return "none"
        return "service" if dispatched.is_set() else "none"

    async def close(self) -> None:
        """Drop the D-Bus connection (the window is closing)."""
        backend = getattr(self._notifier, "_backend", None)
        bus = getattr(backend, "bus", None)
        if bus is not None:
            try:
                bus.disconnect()
            except Exception:
                log.debug("closing the notification bus failed", exc_info=True)


__all__ = ["SEND_TIMEOUT_SECONDS", "DesktopNotifications"]
