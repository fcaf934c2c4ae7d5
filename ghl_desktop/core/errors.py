"""Every failure the product knows, as types. Adapters map HTTP statuses and engine errors here;
callers decide on ``transient`` (retry later) versus permanent (dead-letter, show the user)."""

from __future__ import annotations


class GhlDesktopError(Exception):
    """Base of every error the product raises on purpose."""

    transient: bool = False

    def __init__(self, message: str = "", *, detail: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class ConfigError(GhlDesktopError):
    """A setting is missing or invalid; the message tells the user which and how to fix it."""


class StorageError(GhlDesktopError):
    """The database could not be opened, migrated or written."""


class StorageBusy(StorageError):
    """The database is momentarily unavailable for this write: another writer holds the lock (SQLite
    "database is locked"), a PostgreSQL serialization failure or deadlock, or the disk is full. Nothing
    was written; the same work succeeds later, so it is retried, never dead-lettered for this."""

    transient = True


# --- secrets -------------------------------------------------------------------------------


class SecretStoreError(GhlDesktopError):
    """The secret store failed (keyring daemon gone, vault corrupt)."""


class SecretStoreUnavailable(SecretStoreError):
    """No usable keyring backend on this machine."""


class VaultLocked(SecretStoreError):
    """The encrypted vault needs its passphrase before secrets can be read or written."""


class WrongPassphrase(SecretStoreError):
    """The passphrase given does not open the vault."""


# --- HighLevel -----------------------------------------------------------------------------


class GhlError(GhlDesktopError):
    """A HighLevel API call failed. ``status`` is the HTTP status (0 for transport failures)."""

    def __init__(
        self,
        message: str = "",
        *,
        status: int = 0,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.status = status
        self.code = code


class GhlTransientError(GhlError):
    """5xx, timeout or connection failure: worth retrying with backoff."""

    transient = True


class GhlRateLimited(GhlTransientError):
    """429 from HighLevel; ``retry_after`` seconds to wait (from the X-RateLimit-* headers)."""

    def __init__(self, message: str = "", *, retry_after: float, daily_exhausted: bool = False) -> None:
        super().__init__(message or "rate limited", status=429)
        self.retry_after = retry_after
        self.daily_exhausted = daily_exhausted


class GhlAuthError(GhlError):
    """401 that is an authentication failure (expired or invalid token)."""


class GhlVersionHeaderError(GhlError):
    """401 about the ``Version`` header: a bug in our client, never a reason to refresh."""


class GhlNeedsReconnect(GhlError):
    """The refresh token is gone (``invalid_grant``): the user must reconnect the location."""


class GhlForbidden(GhlError):
    """403: the token has no access to this resource."""


class GhlStatusRace(GhlTransientError):
    """403 on a status update in the seconds after an outbound webhook; retry, do not refresh."""


class GhlBadRequest(GhlError):
    """400/422: the request was refused as malformed; retrying it unchanged will not help."""


class GhlContactNotFound(GhlBadRequest):
    """``CONVERSATIONS_CONTACT_NOT_FOUND``: the contact was merged or deleted; re-resolve by phone."""


class GhlNotFound(GhlError):
    """404."""


class GhlPayloadTooLarge(GhlError):
    """413/415 on an upload."""


class OAuthError(GhlDesktopError):
    """The browser consent flow failed: wrong state, timeout, denied, or the exchange refused."""


# --- WhatsApp ------------------------------------------------------------------------------


class WhatsAppError(GhlDesktopError):
    """A WhatsApp engine call failed."""


class WhatsAppTransientError(WhatsAppError):
    transient = True


class SessionNotConnected(WhatsAppTransientError):
    """The number is not connected right now (reconnecting, phone offline)."""


class SessionLoggedOut(WhatsAppError):
    """The number was unlinked on the phone; it must be paired again."""


class EngineMisconfigured(WhatsAppError):
    """The engine cannot run safely in this process (e.g. NEONIZE_BOT_TAG=off missing at start-up)."""


class NotOnWhatsApp(WhatsAppError):
    """The recipient's phone number has no WhatsApp account."""


class MediaTooLarge(GhlDesktopError):
    """A file is over the size limit for the channel it should go through."""


class UnsupportedMedia(GhlDesktopError):
    """A file type the other side does not accept."""


# --- webhooks ------------------------------------------------------------------------------


class WebhookError(GhlDesktopError):
    """A webhook delivery was refused; ``http_status`` is what the endpoint answers."""

    http_status = 400


class BadSignature(WebhookError):
    http_status = 401


class MalformedWebhook(WebhookError):
    http_status = 400


class WebhookTooLarge(WebhookError):
    http_status = 413


class WebhookBacklogFull(WebhookError):
    """Too many pending events; answering 429 makes HighLevel retry later."""

    http_status = 429
    transient = True
