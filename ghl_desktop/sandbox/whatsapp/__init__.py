"""A simulated WhatsApp network, hosted by the sandbox server (aiohttp).

Why it exists: the product must be exercised end to end (pairing, every session state, every message
kind, receipts, durability) without a real phone or WhatsApp's servers. The network behaves like
WhatsApp where the app can tell the difference:

* an unpaired client sees rotating QR codes (first one long-lived, later ones shorter) and gives up
  after a fixed number of them; a person or a test "scans" one through the control API, or pairs with
  a phone-number code;
* each linked number has exactly one companion device; a second connection with the same device
  replaces the first (``stream_replaced``), an unlinked device is told it is logged out on connect;
* the network keeps every event (message, receipt) for a linked number until that client acks it,
  and redelivers what is unacked, in order, on the next connection;
* simulated customer phones send every message kind and receive what the app sends, with delivery
  receipts when they "receive" and read/played receipts when a test reads them.

Layout: ``model`` (constants, timings, numbers and JIDs, phones, linked numbers, one client
connection), ``state`` (the network's state: persistence, media, views, delivery to linked clients),
``ws`` (the clients' WebSocket protocol: connections, QR and pairing, client calls), ``network``
(:class:`WhatsAppNetwork`: messages typed on phones, shutdown), ``control`` (the HTTP control API).

The wire protocol is described in :mod:`ghl_desktop.sandbox.whatsapp.ws`; the HTTP control API is
listed in :func:`setup_whatsapp_network` and in the README.
"""

from ghl_desktop.sandbox.whatsapp.control import setup_whatsapp_network, whatsapp_network, whatsapp_state
from ghl_desktop.sandbox.whatsapp.model import (
    BadRequest,
    LinkedNumber,
    NetworkConfig,
    SimPhone,
    new_message_id,
    normalize_phone,
    phone_to_jid,
)
from ghl_desktop.sandbox.whatsapp.network import NETWORK_KEY, WhatsAppNetwork

__all__ = [
    "NETWORK_KEY",
    "BadRequest",
    "LinkedNumber",
    "NetworkConfig",
    "SimPhone",
    "WhatsAppNetwork",
    "new_message_id",
    "normalize_phone",
    "phone_to_jid",
    "setup_whatsapp_network",
    "whatsapp_network",
    "whatsapp_state",
]
