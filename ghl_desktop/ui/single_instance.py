"""One ghl-desktop per data dir (kept light: a second launch imports only this, Qt Core/Network and
the settings before it hands off).

A ``QLockFile`` in the data dir decides who is first (a dead holder's lock is stale and taken over);
the first instance listens on a ``QLocalServer`` whose name is derived from the data dir's path. A
second launch on the same data dir finds the lock held, tells the first one "show" over the local
socket (the first raises its window) and exits 0 — before it unlocks any secret (no passphrase
prompt) and before it starts any server (no "[Errno 98] address already in use").
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from PySide6.QtCore import QByteArray, QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger("ghl.ui.instance")

APP_NAME = "ghl-desktop"
#: how long a second launch tries to reach the first one (the contract: it exits within 5 s)
HAND_OFF_SECONDS = 4.0
SHOW = b"show\n"
ACK = b"ok\n"


def instance_name(home: Path) -> str:
    """The local-socket name for one data dir (same dir → same name, per user)."""
    digest = hashlib.sha256(str(Path(home).expanduser().resolve()).encode("utf-8")).hexdigest()[:16]
    return f"{APP_NAME}-{digest}"


class SingleInstance(QObject):
    """``acquire()`` → True: we are the first (and listen); False: another instance has this data dir."""

    activated = Signal()  # a second launch asked us to show the window

    def __init__(self, home: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.home = Path(home)
        self.name = instance_name(self.home)
        self._lock: QLockFile | None = None
        self._server: QLocalServer | None = None
        self._clients: list[QLocalSocket] = []
        #: how many times a second launch handed off to us
        self.activations = 0

    def acquire(self) -> bool:
        self.home.mkdir(parents=True, exist_ok=True)
        lock = QLockFile(str(self.home / f".{APP_NAME}.lock"))
        lock.setStaleLockTime(0)  # stale only when its process is gone, however old
        if not lock.tryLock(0):
            log.info("another ghl-desktop runs on %s", self.home)
            return False
        self._lock = lock
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        QLocalServer.removeServer(self.name)  # a crashed first instance's socket file (we hold the lock)
        if not server.listen(self.name):
            log.warning("single-instance socket %s: %s", self.name, server.errorString())
        server.newConnection.connect(self._accept)
        self._server = server
        return True

    def _accept(self) -> None:
        assert self._server is not None
        while self._server.hasPendingConnections():
            socket = self._server.nextPendingConnection()
            if socket is None:
                break
            self._clients.append(socket)
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(lambda s=socket: self._drop(s))

    def _read(self, socket: QLocalSocket) -> None:
        data = bytes(socket.readAll().data())
        if b"show" in data:
            self.activations += 1
            log.info("a second launch asked for the window")
            socket.write(QByteArray(ACK))
            socket.flush()
            self.activated.emit()

    def _drop(self, socket: QLocalSocket) -> None:
        if socket in self._clients:
            self._clients.remove(socket)
        socket.deleteLater()

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None

    @staticmethod
    def hand_off(home: Path, seconds: float = HAND_OFF_SECONDS) -> bool:
        """Ask the instance running on ``home`` to show its window; True when it answered."""
        name = instance_name(home)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            socket = QLocalSocket()
            socket.connectToServer(name)
            if socket.waitForConnected(500):
                socket.write(QByteArray(SHOW))
                socket.waitForBytesWritten(500)
                answered = socket.waitForReadyRead(int(max(0.1, deadline - time.monotonic()) * 1000))
                ok = answered and ACK.strip() in bytes(socket.readAll().data())
                socket.disconnectFromServer()
                if ok:
                    return True
            time.sleep(0.1)  # the first instance may be starting: its server is not listening yet
        return False


__all__ = ["ACK", "HAND_OFF_SECONDS", "SHOW", "SingleInstance", "instance_name"]
