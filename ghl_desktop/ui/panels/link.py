"""Linking a WhatsApp number, modelled on WhatsApp Desktop's linked-device screen: numbered steps, a
large QR code with a countdown for the current code (its real lifetime from the session events: the
first code lasts about 60 s, later ones about 20 s), "Expired — click to get a new code", and the
pairing-code alternative with a selectable, copyable code.

What the panel says always follows the session it shows: "✓ Linked" only while that number is
connected; a logout, a removal or a failure replaces it at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.core.convert import InvalidPhone
from ghl_desktop.core.convert import normalize_phone as core_normalize_phone
from ghl_desktop.core.models import Location, SessionState, WhatsAppSession
from ghl_desktop.services.cockpit import NO_RUNTIME, Cockpit
from ghl_desktop.services.events import SessionPairCode, SessionQr
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.models import SESSION_STATE_LABELS
from ghl_desktop.ui.panels.base import Tasks, panel_frame
from ghl_desktop.ui.widgets import QrView, StatusLabel

STEPS = ("<ol style='margin-left:-20px'>"
         "<li>Open <b>WhatsApp</b> on the phone</li>"
         "<li>Tap <b>Settings</b> (iPhone) or <b>⋮</b> (Android) → <b>Linked devices</b></li>"
         "<li>Tap <b>Link a device</b> and point the phone at this code</li></ol>")
EXPIRED_TEXT = "Expired — click to get a new code"
QR_EXPIRED_DETAIL = "QR code expired"


def normalize_phone(text: str) -> str:
    """E.164 (+CCNUMBER) through the product's one normaliser, or ValueError with a sentence saying
    what is wrong."""
    raw = text.strip()
    if not raw:
        raise ValueError("Enter the phone number of the WhatsApp account, with its country code (+1 555…).")
    try:
        return core_normalize_phone(raw if raw.startswith(("+", "00")) else "+" + raw.lstrip("0"))
    except InvalidPhone as exc:
        raise ValueError(f"“{raw}” is not a possible phone number (include the country code): {exc}.") from exc


class LinkPanel(QWidget):
    """The linking area. ``phase`` is one of: idle, starting, qr, expired, pair_code, paired, linked, ended.

    Signals: phase_changed(str)."""

    phase_changed = Signal(str)

    def __init__(self, cockpit: Cockpit, bridge: ServiceBridge, *, tasks: Tasks,
                 clock: Callable[[], float] = time.monotonic, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cockpit = cockpit
        self.tasks = tasks
        self._now = clock
        #: the session the panel shows (being linked, or just linked)
        self.session_id: str | None = None
        self.phase = "idle"
        self._deadline: float | None = None
        self._pair_phone: str | None = None
        self._pending_pair_phone: str | None = None

        frame, layout = panel_frame("Link a number")
        body = QWidget()
        body.setObjectName("linkBody")
        col = QVBoxLayout(body)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(6)

        where = QHBoxLayout()
        self.location_label = QLabel("For location:")
        self.location_box = QComboBox()
        self.location_box.setAccessibleName("Location for the new number")
        self.location_box.setToolTip("The HighLevel location the new number will bridge to")
        self.location_label.setBuddy(self.location_box)
        where.addWidget(self.location_label)
        where.addWidget(self.location_box, 1)
        col.addLayout(where)

        self.title = QLabel("Press “Link WhatsApp number…” to show a QR code.")
        self.title.setObjectName("linkTitle")
        self.title.setWordWrap(True)
        col.addWidget(self.title)
        self.steps = QLabel(STEPS)
        self.steps.setObjectName("linkSteps")
        self.steps.setWordWrap(True)
        self.steps.setTextFormat(Qt.TextFormat.RichText)
        self.steps.setVisible(False)
        col.addWidget(self.steps)

        self.qr_view = QrView()
        col.addWidget(self.qr_view, 1000)
        self.countdown = QLabel()
        self.countdown.setObjectName("countdown")
        self.countdown.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.countdown.setWordWrap(True)
        self.countdown.setAccessibleName("Code countdown")
        self.countdown.setVisible(False)
        col.addWidget(self.countdown)
        self.renew_button = QPushButton(EXPIRED_TEXT)
        self.renew_button.setAccessibleName("Get a new QR code")
        self.renew_button.setVisible(False)
        self.renew_button.clicked.connect(lambda: self.renew())
        col.addWidget(self.renew_button)

        rule = QFrame()
        rule.setFrameShape(QFrame.Shape.HLine)
        rule.setFrameShadow(QFrame.Shadow.Sunken)
        col.addWidget(rule)
        self.pair_hint = QLabel("Or link with the phone number instead (no camera needed):")
        self.pair_hint.setWordWrap(True)
        col.addWidget(self.pair_hint)
        pair_row = QHBoxLayout()
        self.pair_phone = QLineEdit()
        self.pair_phone.setObjectName("pairPhone")
        self.pair_phone.setPlaceholderText("+1 555 010 0001")
        self.pair_phone.setAccessibleName("Phone number to pair")
        self.pair_phone.setToolTip("The WhatsApp number to link, with country code")
        self.pair_phone.setMinimumWidth(120)
        self.pair_phone.returnPressed.connect(lambda: self.start_pair())
        self.pair_button = QPushButton("Get pairing code")
        self.pair_button.setAccessibleName("Get a pairing code")
        self.pair_button.setToolTip("Get an 8-character code to type on the phone instead of scanning")
        self.pair_button.clicked.connect(lambda: self.start_pair())
        pair_row.addWidget(self.pair_phone, 1)
        pair_row.addWidget(self.pair_button)
        col.addLayout(pair_row)

        self.pair_box = QWidget()
        self.pair_box.setObjectName("pairBox")
        pair_col = QVBoxLayout(self.pair_box)
        pair_col.setContentsMargins(0, 4, 0, 0)
        code_row = QHBoxLayout()
        self.pair_code = QLabel()
        self.pair_code.setObjectName("pairCode")
        self.pair_code.setAccessibleName("Pairing code")
        self.pair_code.setTextFormat(Qt.TextFormat.PlainText)
        self.pair_code.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                               | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.pair_code.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setAccessibleName("Copy the pairing code")
        self.copy_button.clicked.connect(self.copy_code)
        code_row.addWidget(self.pair_code, 1)
        code_row.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignVCenter)
        pair_col.addLayout(code_row)
        self.pair_where = QLabel()
        self.pair_where.setWordWrap(True)
        pair_col.addWidget(self.pair_where)
        self.pair_box.setVisible(False)
        col.addWidget(self.pair_box)

        self.status = StatusLabel("linkStatus")
        self.status.setAccessibleName("Linking status")
        col.addWidget(self.status)
        col.addStretch(1)  # packs the rest at the top while the QR area is hidden

        self.scroller = QScrollArea()
        self.scroller.setObjectName("linkScroll")
        self.scroller.setWidget(body)
        self.scroller.setWidgetResizable(True)
        self.scroller.setFrameShape(QFrame.Shape.NoFrame)
        self.scroller.viewport().setAutoFillBackground(False)
        body.setAutoFillBackground(False)
        self.scroller.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.MinimumExpanding)
        layout.addWidget(self.scroller, 1)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(frame)
        self.setMinimumWidth(300)

        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._update_countdown)
        if not cockpit.available:
            for button in (self.pair_button,):
                button.setEnabled(False)
                button.setToolTip(NO_RUNTIME)
        bridge.session_qr.connect(self._on_qr)
        bridge.session_pair_code.connect(self._on_pair_code)
        bridge.session_changed.connect(self._on_session)
        bridge.session_removed.connect(self._on_removed)

    # -- locations --

    def set_locations(self, locations: list[Location]) -> None:
        """The locations a new number can bridge to (the chooser shows only when there is a choice)."""
        current = self.location_box.currentData()
        self.location_box.blockSignals(True)
        self.location_box.clear()
        for loc in locations:
            self.location_box.addItem(loc.name, loc.id)
        index = self.location_box.findData(current)
        self.location_box.setCurrentIndex(max(index, 0))
        self.location_box.blockSignals(False)
        several = len(locations) > 1
        self.location_box.setVisible(several)
        self.location_label.setVisible(several)

    def _chosen_location(self) -> str | None:
        data = self.location_box.currentData()
        return str(data) if data else None

    # -- phases --

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        qr_like = phase in ("qr", "expired", "starting")
        self.steps.setVisible(qr_like)
        self.countdown.setVisible(phase in ("qr", "expired"))
        self.renew_button.setVisible(phase == "expired")
        self.pair_box.setVisible(phase == "pair_code")
        self.qr_view.setVisible(phase != "pair_code")  # the code to type is what matters then
        if phase != "qr":
            self._tick.stop()
            self._deadline = None
        self.phase_changed.emit(phase)

    def _idle(self, text: str) -> None:
        self.session_id = None
        self.title.setText("Press “Link WhatsApp number…” to show a QR code.")
        self.qr_view.show_message(text)
        self._set_phase("idle")

    # -- actions --

    def start_link(self) -> asyncio.Task[None] | None:
        """A new number for the chosen location; its QR codes appear here."""
        if not self.cockpit.available:
            return None
        location_id = self._chosen_location()
        if location_id is None:
            self.status.say("Connect a HighLevel location first: a number bridges to a location.", error=True)
            return None
        self.status.say(None)
        self.session_id = None
        self._pending_pair_phone = None
        self.title.setText(f"Scan with WhatsApp to link a number for {self.location_box.currentText()}")
        self.qr_view.show_message("Starting WhatsApp… the QR code appears in a moment.")
        self._set_phase("starting")
        return self.tasks.spawn(self._create(location_id, None), name="link", on_error=self._failed)

    def follow(self, session_id: str) -> None:
        """Show the linking of this (existing) number: Link again / a new code."""
        self.session_id = session_id
        self.status.say(None)
        self.title.setText("Scan with WhatsApp to link the number again")
        self.qr_view.show_message("Starting WhatsApp… the QR code appears in a moment.")
        self._set_phase("starting")

    def renew(self) -> asyncio.Task[None] | None:
        """The code ran out: a fresh one for the same number."""
        sid = self.session_id
        if sid is None or not self.cockpit.available:
            return self.start_link()
        self.follow(sid)
        return self.tasks.spawn(self.cockpit.renew_code(sid), name="renew-code", on_error=self._failed)

    def start_pair(self) -> asyncio.Task[None] | None:
        """A pairing code: for the number being linked now, or a new number for the chosen location."""
        if not self.cockpit.available:
            return None
        try:
            phone = normalize_phone(self.pair_phone.text())
        except ValueError as exc:
            self.status.say(str(exc), error=True)
            return None
        self.status.say(f"Asking WhatsApp for a pairing code for {phone}…")
        self._pair_phone = phone
        return self.tasks.spawn(self._pair(phone), name="pair", on_error=self._failed)

    async def _pair(self, phone: str) -> None:
        """The number being linked now (read off the loop), or a new number for the chosen location."""
        session = await self.cockpit.number(self.session_id) if self.session_id else None
        if session is not None and session.state is SessionState.WAITING_FOR_SCAN:
            await self.cockpit.pair_number(session.id, phone)
            return
        location_id = self._chosen_location()
        if location_id is None:
            self.status.say("Connect a HighLevel location first: a number bridges to a location.", error=True)
            return
        self.session_id = None
        self.title.setText(f"Pairing a number for {self.location_box.currentText()}")
        self._pending_pair_phone = phone  # the code may arrive before link_number returns
        self._set_phase("starting")
        await self._create(location_id, phone)

    def copy_code(self) -> None:
        code = self.pair_code.text()
        if code:
            QGuiApplication.clipboard().setText(code.replace("-", ""))
            self.status.say("Pairing code copied.")

    async def _create(self, location_id: str, pair_phone: str | None) -> None:
        session = await self.cockpit.link_number(location_id, pair_phone=pair_phone)
        if self.session_id is None:
            self.session_id = session.id

    def _failed(self, text: str) -> None:
        self.status.say(f"Linking did not work: {text}", error=True)
        if self.phase in ("starting", "idle"):
            self.qr_view.show_message("Press “Link WhatsApp number…” to try again.")
            self._set_phase("ended")

    # -- session events --

    def _mine(self, session_id: str) -> bool:
        if self.session_id is None and self.phase == "starting":
            self.session_id = session_id  # the number this panel just asked for
        return session_id == self.session_id

    def _on_qr(self, event: SessionQr) -> None:
        if not self._mine(event.session_id):
            return
        self.qr_view.show_qr(event.code)
        self._deadline = self._now() + max(0.0, float(event.expires_in))
        self._set_phase("qr")
        self._update_countdown()
        self._tick.start()

    def _update_countdown(self) -> None:
        if self._deadline is None:
            return
        left = round(self._deadline - self._now())
        if left > 0:
            self.countdown.setText(f"This code is valid for {left} s; a new one follows by itself.")
            return
        self.qr_view.mark_stale()
        self.countdown.setText("This code has expired.")
        self._set_phase("expired")

    def _on_pair_code(self, event: SessionPairCode) -> None:
        if not self._mine(event.session_id):
            return
        phone = self._pair_phone or self._pending_pair_phone
        code = event.code
        shown = f"{code[:4]}-{code[4:]}" if len(code) == 8 else code
        self.pair_code.setText(shown)
        self.pair_where.setText(
            f"Type it on the phone {phone or ''}: WhatsApp → Linked devices → Link a device → "
            "Link with phone number instead.")
        self.qr_view.show_message("Enter the pairing code below on the phone.")
        self.pair_phone.clear()  # used: the next pairing starts from an empty field
        self.status.say(None)
        self._set_phase("pair_code")

    def _on_session(self, session: WhatsAppSession) -> None:
        if session.id != self.session_id:
            return
        who = session.phone or "the number"
        state = session.state
        if state is SessionState.CONNECTED:
            self.qr_view.show_message(f"✓ Linked {who} — messages now cross the bridge.", success=True)
            self.title.setText("Linked")
            self.status.say(None)
            self._set_phase("linked")
        elif state is SessionState.CONNECTING and self.phase in ("qr", "expired", "pair_code", "starting") \
                and session.detail and "Paired" in session.detail:
            self.qr_view.show_message(f"Paired {session.phone or ''} — connecting…")
            self._set_phase("paired")
        elif state is SessionState.WAITING_FOR_SCAN:
            return
        elif state is SessionState.FAILED and (session.detail or "").startswith(QR_EXPIRED_DETAIL):
            if self.qr_view.code:
                self.qr_view.mark_stale()
            else:
                self.qr_view.show_message("The QR codes ran out before the phone scanned one.")
            self.countdown.setText("The codes ran out.")
            self._set_phase("expired")
        elif self.phase == "linked" or state.is_final:
            label = SESSION_STATE_LABELS.get(state, str(state))
            self._idle(f"{who} is no longer linked ({label}). Press “Link WhatsApp number…” to link a number.")
            self.status.say(session.detail if state.is_final and session.detail else None)

    def _on_removed(self, session_id: str) -> None:
        if session_id == self.session_id:
            self._idle(QrView.IDLE_TEXT)
            self.status.say("The number being linked was removed.")


__all__ = ["EXPIRED_TEXT", "LinkPanel", "normalize_phone"]
