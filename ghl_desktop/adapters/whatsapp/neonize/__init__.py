"""The real WhatsApp engine (neonize) behind the ``WhatsAppTransport`` port, in four rooms:
``engine`` (process-wide state: one client per number, the Go lock, the executor, the bot-tag check),
``ingress`` (engine callbacks → write-ahead journal → ordered pump → domain events), ``outbound``
(sending; the messages built by pure functions) and ``transport`` (``NeonizeTransport``: one number's
lifecycle). Importing this package does not load the engine (neonize is imported lazily)."""

from ghl_desktop.adapters.whatsapp.neonize.engine import (
    MESSAGE_CODE,
    RECEIPT_CODE,
    RESERVE_THREADS,
    BotTagNotDisabled,
    EngineStatus,
    bot_tag_disabled,
    ensure_executor,
    quote_store_path,
    registered_client,
)
from ghl_desktop.adapters.whatsapp.neonize.transport import NeonizeTransport

__all__ = [
    "MESSAGE_CODE",
    "RECEIPT_CODE",
    "RESERVE_THREADS",
    "BotTagNotDisabled",
    "EngineStatus",
    "NeonizeTransport",
    "bot_tag_disabled",
    "ensure_executor",
    "quote_store_path",
    "registered_client",
]
