"""The WhatsApp numbers panel (the sessions table with Log out / Retry / Link again / Remove) and the
linking area beside it: the QR code or the pairing code of the number being linked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import phonenumbers
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from ghl_desktop.core.models import Location, LocationState, SessionState, WhatsAppSession, can_transition
from ghl_desktop.ui.models import SESSION_STATE_LABELS
from ghl_desktop.ui.widgets import EmptyStateView, QrView, make_table

if TYPE_CHECKING:
    from ghl_desktop.services.events import SessionPairCode, SessionQr

from ghl_desktop.ui.panels.base import PanelBase, _panel, _status_label

_LIVE = frozenset({SessionState.CONNECTING, SessionState.CONNECTED, SessionState.RECONNECTING,
                   SessionState.PHONE_OFFLINE})


def normalize_phone(text: str) -> str:
    """E.164 (+CCNUMBER) or ValueError with a sentence saying what is wrong."""
    raw = text.strip()
    if not raw:
        raise ValueError("Enter the phone number of the WhatsApp account, with its country code (+1 555…).")
    try:
        number = phonenumbers.parse(raw if raw.startswith("+") else "+" + raw.lstrip("0"), None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"“{raw}” is not a phone number: {exc}") from exc
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"“{raw}” is not a possible phone number (include the country code).")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class SessionsPanel(PanelBase):
    """WhatsApp numbers and the linking area (QR code / pairing code)."""

    #: the session whose QR code / pairing code the linking area shows
    linking: str | None
    _pair_phone_for: dict[str, str]
    _pending_pair_phone: str | None

    def _build_sessions_panel(self) -> QWidget:
        self.link_location = QComboBox()
        self.link_location.setMinimumWidth(180)
        self.link_location.setToolTip("The HighLevel location the new number will bridge to")
        self.link_location.setVisible(False)
        self.link_button = QPushButton("Link WhatsApp number…")
        self.link_button.clicked.connect(lambda: self.start_link())
        frame, layout = _panel("WhatsApp numbers", self.link_location, self.link_button)
        self.sessions_view = make_table(self.sessions_model, stretch_column=3, fit_columns=(0, 1, 2, 4, 5))
        self.sessions_view.verticalHeader().setDefaultSectionSize(30)
        self.sessions_panel = EmptyStateView(
            self.sessions_view, "No WhatsApp numbers linked yet — link one to a location to start bridging."
        )
        layout.addWidget(self.sessions_panel)
        self._row_actions(self.sessions_view, self.sessions_model, self._session_actions)
        return frame

    def _build_link_panel(self) -> QWidget:
        frame, layout = _panel("Link a number")
        self.qr_title = QLabel("Press “Link WhatsApp number…” to show a QR code.")
        self.qr_title.setWordWrap(True)
        layout.addWidget(self.qr_title)
        self.qr_view = QrView()
        layout.addWidget(self.qr_view, 1)
        pair_row = QHBoxLayout()
        self.pair_phone = QLineEdit()
        self.pair_phone.setPlaceholderText("+1 555 010 0001")
        self.pair_phone.setToolTip("The WhatsApp number to link, with country code")
        self.pair_button = QPushButton("Pair with phone number")
        self.pair_button.setToolTip("Get an 8-character code to type on the phone instead of scanning")
        self.pair_button.clicked.connect(lambda: self.start_pair())
        pair_row.addWidget(self.pair_phone, 1)
        pair_row.addWidget(self.pair_button)
        layout.addLayout(pair_row)
        self.link_status = _status_label("linkStatus")
        layout.addWidget(self.link_status)
        return frame

    def _session_actions(self, session: WhatsAppSession) -> list[tuple[str, Callable[[], object]]]:
        if self.runtime is None:
            return []
        sid = session.id
        actions: list[tuple[str, Callable[[], object]]] = []
        if session.state in _LIVE:
            actions.append(("Log out", lambda: self.session_action("logout", sid)))
        elif session.state is SessionState.WAITING_FOR_SCAN:
            actions.append(("Cancel", lambda: self.session_action("logout", sid)))
        else:
            if session.jid and can_transition(session.state, SessionState.CONNECTING):
                actions.append(("Retry", lambda: self.session_action("retry", sid)))
            if can_transition(session.state, SessionState.WAITING_FOR_SCAN):
                actions.append(("Link again", lambda: self.session_action("link_again", sid)))
        actions.append(("Remove", lambda: self.session_action("remove", sid)))
        return actions

    # -- Link WhatsApp --

    def _connected_locations(self) -> list[Location]:
        return [loc for loc in self.locations_model.records() if loc.state is LocationState.CONNECTED]

    def _update_link_locations(self) -> None:
        current = self.link_location.currentData()
        locations = self._connected_locations()
        self.link_location.blockSignals(True)
        self.link_location.clear()
        for loc in locations:
            self.link_location.addItem(loc.name, loc.id)
        index = self.link_location.findData(current)
        self.link_location.setCurrentIndex(max(index, 0))
        self.link_location.blockSignals(False)
        self.link_location.setVisible(len(locations) > 1)

    def _chosen_location(self) -> str | None:
        data = self.link_location.currentData()
        return str(data) if data else None

    def start_link(self) -> asyncio.Task[None] | None:
        """A new session for the chosen location; its QR codes appear in the linking area."""
        if self.runtime is None:
            return None
        location_id = self._chosen_location()
        if location_id is None:
            self._say(self.link_status, "Connect a HighLevel location first: a number bridges to a location.",
                      error=True)
            return None
        self._say(self.link_status, None)
        self.qr_title.setText(f"Scan with WhatsApp for {self.link_location.currentText()}")
        self.qr_view.show_message("Starting WhatsApp… the QR code appears in a moment.")
        return self._spawn(self._create(location_id, None), name="link", on_error=self._link_failed)

    def start_pair(self) -> asyncio.Task[None] | None:
        """Pairing by code: for the number being linked now, or a new session for the chosen location."""
        if self.runtime is None:
            return None
        try:
            phone = normalize_phone(self.pair_phone.text())
        except ValueError as exc:
            self._say(self.link_status, str(exc), error=True)
            return None
        self._say(self.link_status, f"Asking WhatsApp for a pairing code for {phone}…")
        linking = self.sessions_model.row_of(self.linking) if self.linking else None
        if linking is not None and self.sessions_model.record(linking).state is SessionState.WAITING_FOR_SCAN:
            sid = self.linking
            assert sid is not None
            self._pair_phone_for[sid] = phone
            return self._spawn(self.runtime.sessions.pair_by_phone(sid, phone), name="pair",
                               on_error=self._link_failed)
        location_id = self._chosen_location()
        if location_id is None:
            self._say(self.link_status, "Connect a HighLevel location first: a number bridges to a location.",
                      error=True)
            return None
        self.qr_title.setText(f"Pairing a number for {self.link_location.currentText()}")
        self._pending_pair_phone = phone  # the code may arrive before create_session returns
        return self._spawn(self._create(location_id, phone), name="pair", on_error=self._link_failed)

    async def _create(self, location_id: str, pair_phone: str | None) -> None:
        assert self.runtime is not None
        session = await self.runtime.sessions.create_session(location_id, pair_phone=pair_phone)
        if pair_phone:
            self._pair_phone_for[session.id] = pair_phone
        if self.linking is None:
            self.linking = session.id
        self.sessions_model.upsert(session)

    def _link_failed(self, text: str) -> None:
        self._say(self.link_status, f"Linking did not work: {text}", error=True)
        if self.qr_view.code is None and self.qr_view.pair_code is None:
            self.qr_view.show_message(f"{text}\n\nPress Link again.")

    def _session_qr(self, event: SessionQr) -> None:
        self.linking = event.session_id
        self.qr_view.show_qr(event.code)
        self._say(self.link_status, "Open WhatsApp on the phone → Settings → Linked devices → Link a device, "
                                    "and point it at this code. It changes every 20 seconds.")

    def _session_pair_code(self, event: SessionPairCode) -> None:
        self.linking = event.session_id
        phone = self._pair_phone_for.get(event.session_id) or self._pending_pair_phone
        self.qr_view.show_pair_code(event.code, phone)
        self._say(self.link_status, None)

    def session_action(self, action: str, session_id: str) -> asyncio.Task[None] | None:
        """Log out / Remove / Retry / Link again on one number (destructive ones ask first)."""
        runtime = self.runtime
        if runtime is None:
            return None
        row = self.sessions_model.row_of(session_id)
        who = (self.sessions_model.record(row).phone if row is not None else None) or "this number"
        if action == "logout" and row is not None and \
                self.sessions_model.record(row).state is not SessionState.WAITING_FOR_SCAN:
            if not self.confirm("Log out", f"Log {who} out of WhatsApp? You will have to scan a QR code to "
                                           "link it again."):
                return None
        if action == "remove" and not self.confirm(
                "Remove number", f"Remove {who} from ghl-desktop? It is logged out and its WhatsApp data on this "
                                 "computer is deleted; the message log keeps its messages."):
            return None
        if action == "link_again":
            self.qr_title.setText("Scan with WhatsApp to link the number again")
            self.qr_view.show_message("Starting WhatsApp… the QR code appears in a moment.")
            self.linking = session_id
        calls: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {
            "logout": runtime.sessions.logout,
            "remove": runtime.sessions.remove,
            "retry": runtime.sessions.retry,
            "link_again": runtime.sessions.link_again,
        }
        return self._spawn(calls[action](session_id), name=f"session-{action}",
                           on_error=lambda text: self._say(self.link_status, f"{who}: {text}", error=True))

    def _session_changed(self, session: WhatsAppSession) -> None:
        self.sessions_model.upsert(session)
        self.notices.add(self.policy.on_session(session))
        if session.id != self.linking:
            return
        if session.state is SessionState.CONNECTED:
            self.linking = None
            self.qr_view.show_message(f"✓ Linked {session.phone or 'the number'} — messages now cross the bridge.")
            self._say(self.link_status, None)
        elif session.state is SessionState.CONNECTING and session.detail and "Paired" in session.detail:
            self.qr_view.show_message(f"Paired {session.phone or ''} — connecting…")
        elif session.state.is_final:
            self.linking = None
            self.qr_view.show_message(session.detail or SESSION_STATE_LABELS[session.state])
            self._say(self.link_status, None)

    def _session_removed(self, session_id: str) -> None:
        self.sessions_model.remove(session_id)
        self.policy.on_session_removed(session_id)
        if session_id == self.linking:
            self.linking = None
            self.qr_view.clear_qr()
