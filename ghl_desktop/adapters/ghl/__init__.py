"""HighLevel adapter: the API client (``client``), OAuth install with a loopback redirect
(``oauth``), tokens (``tokens``), rate scheduling (``rate``) and error mapping (``transport``).

Composition (in ``app.py``)::

    http = create_http_client(settings)                      # the ONE httpx.AsyncClient
    tokens = TokenManager(secret_store, db.locations, http, settings)
    client = GhlClient(settings, tokens, http)
    oauth = OAuthConnector(settings, tokens, client, db.locations)
"""

from __future__ import annotations

from ghl_desktop.adapters.ghl.client import (
    ClientOptions,
    Contact,
    Conversation,
    ConversationMessage,
    GhlClient,
    InboundResult,
    InstalledLocation,
    InvalidPhoneNumber,
    LocationDetails,
    MessagePage,
    UploadedAttachment,
    UpsertedContact,
    normalize_phone,
)
from ghl_desktop.adapters.ghl.oauth import (
    APP_SCOPES,
    COMPANY_SCOPES,
    PROVIDER_SCOPES,
    AppRegistration,
    LoopbackReceiver,
    OAuthConnector,
    OAuthOptions,
    app_registration,
    build_authorize_url,
)
from ghl_desktop.adapters.ghl.rate import RateLimitConfig, RateScheduler
from ghl_desktop.adapters.ghl.tokens import TokenGrant, TokenManager
from ghl_desktop.adapters.ghl.transport import create_http_client

__all__ = [
    "APP_SCOPES",
    "COMPANY_SCOPES",
    "PROVIDER_SCOPES",
    "AppRegistration",
    "ClientOptions",
    "Contact",
    "Conversation",
    "ConversationMessage",
    "GhlClient",
    "InboundResult",
    "InstalledLocation",
    "InvalidPhoneNumber",
    "LocationDetails",
    "LoopbackReceiver",
    "MessagePage",
    "OAuthConnector",
    "OAuthOptions",
    "RateLimitConfig",
    "RateScheduler",
    "TokenGrant",
    "TokenManager",
    "UploadedAttachment",
    "UpsertedContact",
    "app_registration",
    "build_authorize_url",
    "create_http_client",
    "normalize_phone",
]
