"""Call work: a WhatsApp call to a linked number becomes one readable line in the caller's HighLevel
conversation ("📞 Missed WhatsApp voice call at 14:02"), and is optionally declined with a reply text.

``on_call`` (the sessions service's call sink) only stores a ``wa.call`` job, before the transport
acknowledges the event; the worker does the network work:

- a settled call (missed / rejected / answered) → the line is stored as a message of the chat with its
  own ``wa.inbound`` job (so it shows in the message log, resolves the contact, and is posted with
  ``altId`` = ``CALL-<call_id>``). The job's dedupe key is per ``call_id``, so the several events of
  one call (offer, terminate, a replayed terminate) give one line.
- a ringing call with ``reject_calls`` on → ``transport.reject_call`` then the reply text, sent with an
  id chosen when the job was stored (a retry re-sends the same id, which WhatsApp deduplicates).
  The rejected line follows (same dedupe key as the terminate that may or may not come after).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ghl_desktop.core.convert import call_text, jid_for_phone
from ghl_desktop.core.errors import WhatsAppError
from ghl_desktop.core.jobs import PayloadError
from ghl_desktop.core.models import Job, MessageKind, NewJob, WhatsAppSession
from ghl_desktop.core.whatsapp import CallEvent, CallOutcome, IncomingMessage
from ghl_desktop.services.bridge.common import BridgeWork, log, new_wa_message_id
from ghl_desktop.services.jobs import RetryLater

CALL = "wa.call"


@dataclass(frozen=True, slots=True)
class CallPayload:
    session_id: str
    call_id: str
    caller: str
    caller_phone: str | None
    video: bool
    outcome: str
    timestamp: str  # ISO-8601
    push_name: str | None = None
    #: "line" (post the call line) or "reject" (decline, send the reply, then the line)
    action: str = "line"
    reply_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id, "call_id": self.call_id, "caller": self.caller,
            "caller_phone": self.caller_phone, "video": self.video, "outcome": self.outcome,
            "timestamp": self.timestamp, "push_name": self.push_name, "action": self.action,
            "reply_id": self.reply_id,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> CallPayload:
        try:
            return cls(
                session_id=str(payload["session_id"]), call_id=str(payload["call_id"]),
                caller=str(payload["caller"]), caller_phone=payload.get("caller_phone"),
                video=bool(payload.get("video")), outcome=str(payload["outcome"]),
                timestamp=str(payload["timestamp"]), push_name=payload.get("push_name"),
                action=str(payload.get("action") or "line"), reply_id=payload.get("reply_id"),
            )
        except KeyError as missing:
            raise PayloadError(f"a call job needs {missing}") from None

    @classmethod
    def of(cls, session_id: str, call: CallEvent, **kw: Any) -> CallPayload:
        return cls(session_id, call.call_id, call.caller, call.caller_phone, call.video, call.outcome.value,
                   call.timestamp.isoformat(), call.push_name, **kw)

    def event(self, outcome: CallOutcome | None = None) -> CallEvent:
        return CallEvent(call_id=self.call_id, caller=self.caller, caller_phone=self.caller_phone, video=self.video,
                         outcome=outcome or CallOutcome(self.outcome), timestamp=datetime.fromisoformat(self.timestamp),
                         push_name=self.push_name)


def call_message(call: CallEvent) -> IncomingMessage:
    """The call as a message of the caller's chat (what ``wa.inbound`` posts): id ``CALL-<call_id>``."""
    chat = jid_for_phone(call.caller_phone) if call.caller_phone else call.caller
    return IncomingMessage(
        id=f"CALL-{call.call_id}", chat=chat, sender=call.caller, sender_phone=call.caller_phone,
        sender_lid=call.caller if call.caller.endswith("@lid") else None, push_name=call.push_name,
        timestamp=call.timestamp, kind=MessageKind.TEXT, text=call_text(call),
    )


class CallWork(BridgeWork):
    async def on_call(self, session: WhatsAppSession, call: CallEvent) -> None:
        """Called by the sessions service for every call event, before it is acknowledged."""
        if call.is_group:
            return  # group calls have no one-to-one conversation to land in
        if call.outcome is CallOutcome.OFFERED:
            if not self._options.reject_calls:
                return  # the settling event (missed / rejected / answered) brings the line
            job = NewJob(kind=CALL, payload=CallPayload.of(session.id, call, action="reject",
                                                           reply_id=new_wa_message_id()).to_json(),
                         dedupe_key=f"call-reject:{session.id}:{call.call_id}",
                         ordering_key=f"call:{session.id}:{call.call_id}")
        else:
            if self._options.reject_calls and call.outcome is CallOutcome.MISSED:
                call = replace(call, outcome=CallOutcome.REJECTED)  # we decline every call we are offered
            job = _line_job(session.id, call)
        _, created = await self._repos.jobs.enqueue(job)
        if created:
            self._on_enqueued()

    async def _handle_call(self, job: Job) -> None:
        payload = CallPayload.from_json(job.payload)
        if payload.action == "reject":
            await self._reject(payload)
            line = _line_job(payload.session_id, payload.event(CallOutcome.REJECTED))
            _, created = await self._repos.jobs.enqueue(line)
            if created:
                self._on_enqueued()
            return
        session = await self._repos.sessions.get(payload.session_id)
        if session is None:
            log.info("call %s: its WhatsApp number is gone; no line posted", payload.call_id)
            return
        await self.on_message(session, call_message(payload.event()))  # type: ignore[attr-defined]

    async def _reject(self, payload: CallPayload) -> None:
        transport = self._sessions.transport_for(payload.session_id)
        if transport is None:
            raise RetryLater("WhatsApp number not connected; declining the call waits",
                             self._options.session_wait_seconds)
        try:
            await transport.reject_call(payload.caller, payload.call_id)
        except WhatsAppError as error:
            if error.transient:
                raise
            log.info("call %s could not be declined (%s); the reply is sent anyway", payload.call_id, error)
        text = self._options.reject_call_text
        if text:
            chat = jid_for_phone(payload.caller_phone) if payload.caller_phone else payload.caller
            await self._sessions.send_text(payload.session_id, chat, text, message_id=payload.reply_id)


def _line_job(session_id: str, call: CallEvent) -> NewJob:
    """The job posting the call's one line (dedupe per call: later events of the same call add nothing)."""
    return NewJob(kind=CALL, payload=CallPayload.of(session_id, call).to_json(),
                  dedupe_key=f"call:{session_id}:{call.call_id}", ordering_key=f"call:{session_id}:{call.call_id}")
