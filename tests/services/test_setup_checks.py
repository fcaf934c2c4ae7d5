"""First-run checks (services/setup_checks.py) against real servers on loopback: the HighLevel sandbox's
token endpoint, the app's own webhook endpoint, a real ghl-relay, a silent server and a closed port."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ghl_desktop.adapters.ghl.oauth import LoopbackReceiver, OAuthOptions
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.relay.server import RelayConfig, RelayServer
from ghl_desktop.relay.store import RelayStore
from ghl_desktop.sandbox.server import RunningSandbox
from ghl_desktop.services.setup_checks import (
    CLIENT_SECRET_KEY,
    RELAY_TOKEN_KEY,
    Outcome,
    SetupService,
    Step,
    check_ports,
    check_provider_id,
    port_free,
    probe_credentials,
    send_test_delivery,
)
from ghl_desktop.webhooks.endpoint import WebhookServer
from ghl_desktop.webhooks.gate import WebhookGate
from ghl_desktop.webhooks.intake import WebhookIntake
from ghl_desktop.webhooks.verify import SignatureVerifier
from tests.fakes.job_queue import MemoryJobQueue
from tests.fakes.secrets import MemorySecretStore
from tests.webhooks.signing import SigningKeys


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and reads, but never answers (a black-holed API)."""
    held: list[asyncio.StreamWriter] = []

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()


@pytest.mark.asyncio
async def test_the_probe_tells_good_from_bad_credentials_without_spending_a_code(sandbox: RunningSandbox) -> None:
    tokens_before = len(sandbox.state.tokens)
    good = await probe_credentials(sandbox.url, sandbox.client_id, sandbox.client_secret)
    assert good.outcome is Outcome.OK and "accepted" in good.message
    bad = await probe_credentials(sandbox.url, sandbox.client_id, "not-the-secret")
    assert bad.outcome is Outcome.FAILED
    assert "refused the client ID or secret" in bad.message and "401" in bad.message and bad.hint
    wrong_id = await probe_credentials(sandbox.url, "someone-else", sandbox.client_secret)
    assert wrong_id.outcome is Outcome.FAILED
    empty = await probe_credentials(sandbox.url, sandbox.client_id, "  ")
    assert empty.outcome is Outcome.FAILED and "both needed" in empty.message
    assert len(sandbox.state.tokens) == tokens_before  # no token was ever issued
    assert "not-the-secret" not in bad.message + bad.hint


@pytest.mark.asyncio
async def test_an_unreachable_api_is_a_readable_network_error(silent_server: str) -> None:
    refused = await probe_credentials(f"http://127.0.0.1:{closed_port()}", "id", "secret")
    assert refused.outcome is Outcome.UNREACHABLE
    assert refused.message.startswith("Network error: 127.0.0.1:") and "refused the connection" in refused.message
    assert "internet connection" in refused.hint
    # an API that takes the connection and never answers: the probe's own short timeout ends it
    silent = await probe_credentials(silent_server, "id", "secret", wait_seconds=0.3)
    assert silent.outcome is Outcome.UNREACHABLE
    assert "did not answer within 0.3 s" in silent.message


def test_the_default_probe_timeout_is_seconds_not_the_oauth_flows_minutes() -> None:
    service = SetupService(load_settings(), MemorySecretStore())
    assert service.timeout <= 10 < load_settings().oauth_timeout_seconds


def test_provider_id_shape() -> None:
    assert check_provider_id("65f1c2d3e4a5b6c7d8e9f001").ok
    assert check_provider_id(None).outcome is Outcome.FAILED
    assert "does not look like" in check_provider_id("My WhatsApp provider").message
    assert not check_provider_id("   ").ok


@pytest.mark.asyncio
async def test_credentials_are_saved_only_when_accepted_and_the_secret_never_touches_settings_json(
    sandbox: RunningSandbox, data_home: Path
) -> None:
    secrets = MemorySecretStore()
    service = SetupService(Settings(home=data_home, api_base=sandbox.url), secrets)
    refused = await service.verify_and_save_credentials(sandbox.client_id, "wrong")
    assert not refused.ok and secrets.values == {} and not (data_home / "settings.json").exists()
    assert not service.status().step(Step.CREDENTIALS).done
    accepted = await service.verify_and_save_credentials(f" {sandbox.client_id} ", sandbox.client_secret)
    assert accepted.ok
    assert secrets.values == {CLIENT_SECRET_KEY: sandbox.client_secret}
    on_disk = (data_home / "settings.json").read_text()
    assert json.loads(on_disk)["client_id"] == sandbox.client_id
    assert sandbox.client_secret not in on_disk
    assert sandbox.client_secret not in (data_home / "setup.json").read_text()
    assert load_settings().client_id == sandbox.client_id  # the next start sees it
    assert service.status().step(Step.CREDENTIALS).done
    # a different client ID must be verified again
    service._save_settings(client_id="another-app")
    assert not service.status().step(Step.CREDENTIALS).done


@pytest.mark.asyncio
async def test_the_redirect_uri_is_the_one_the_oauth_listener_uses(data_home: Path) -> None:
    port = closed_port()
    settings = Settings(home=data_home, oauth_redirect_port=port)
    service = SetupService(settings, MemorySecretStore())
    receiver = LoopbackReceiver(OAuthOptions.from_settings(settings), "state")
    try:
        assert await receiver.start() == service.redirect_uri == f"http://127.0.0.1:{port}/oauth/callback"
    finally:
        await receiver.close()
    assert not service.status().step(Step.REDIRECT_URI).done
    service.confirm_redirect_registered()
    assert service.status().step(Step.REDIRECT_URI).done
    moved = SetupService(Settings(home=data_home, oauth_redirect_port=port + 1), MemorySecretStore())
    assert not moved.status().step(Step.REDIRECT_URI).done  # another port is another URI to register


@pytest_asyncio.fixture
async def direct_endpoint(data_home: Path) -> AsyncIterator[tuple[str, MemoryJobQueue]]:
    keys = SigningKeys()
    queue = MemoryJobQueue()
    gate = WebhookGate(SignatureVerifier.from_values(keys.ed25519_public_pem, keys.rsa_public_pem))
    server = WebhookServer(load_settings(), WebhookIntake(queue.aio), gate=gate, host="127.0.0.1", port=0)
    url = await server.start()
    try:
        yield url, queue
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_direct_mode_test_delivery_goes_through_the_public_url_and_stores_nothing(
    direct_endpoint: tuple[str, MemoryJobQueue], sandbox: RunningSandbox, data_home: Path
) -> None:
    url, queue = direct_endpoint
    service = SetupService(load_settings(), MemorySecretStore())
    assert not service.status().step(Step.DELIVERY).done
    nothing = await service.check_delivery()
    assert nothing.outcome is Outcome.FAILED and "No delivery URL" in nothing.message
    service.save_direct(url + "/ghl/provider/webhook")  # pasted as HighLevel shows it: the path is dropped
    assert service.delivery_url() == url + "/ghl/provider/webhook"
    result = await service.check_delivery()
    assert result.ok, result
    assert "the tunnel reaches this app" in result.message and "refused" in result.message
    assert queue.list() == []
    assert service.status().step(Step.DELIVERY).done
    # a public URL that reaches something else (here: the HighLevel sandbox) is not a working path
    wrong = await send_test_delivery(public_url=sandbox.url)
    assert wrong.outcome is Outcome.FAILED and "not the app" in wrong.message
    down = await send_test_delivery(public_url=f"http://127.0.0.1:{closed_port()}")
    assert down.outcome is Outcome.UNREACHABLE


@pytest_asyncio.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[RelayServer, str]]:
    keys = SigningKeys()
    store = RelayStore.open(f"sqlite:///{tmp_path / 'relay.db'}")
    token = store.create_token("office-pc")
    gate = WebhookGate(SignatureVerifier.from_values(keys.ed25519_public_pem, keys.rsa_public_pem))
    server = RelayServer(store, gate, config=RelayConfig(db_thread=False))
    await server.start()
    try:
        yield server, token
    finally:
        await server.stop()
        store.close()


@pytest.mark.asyncio
async def test_relay_mode_test_delivery_checks_the_token_and_the_delivery_url(
    relay: tuple[RelayServer, str], data_home: Path
) -> None:
    server, token = relay
    secrets = MemorySecretStore()
    service = SetupService(load_settings(), secrets)
    await service.save_relay(server.url + "/", "wrong-token")
    assert secrets.values == {RELAY_TOKEN_KEY: "wrong-token"}
    assert "wrong-token" not in (data_home / "settings.json").read_text()
    refused = await service.check_delivery()
    assert refused.outcome is Outcome.FAILED and "refused the relay token" in refused.message
    await service.save_relay(server.url, token)
    result = await service.check_delivery()
    assert result.ok, result
    assert "'office-pc'" in result.message and server.url + "/ghl/provider/webhook" in result.message
    assert service.status().step(Step.DELIVERY).done
    assert load_settings().relay_url == server.url


def test_a_port_in_use_is_reported(data_home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        free, detail = port_free("127.0.0.1", port)
        assert not free and "in use" in detail.lower()
        settings = Settings(home=data_home, oauth_redirect_port=port, webhook_port=closed_port())
        checks = {c.what: c for c in check_ports(settings)}
        assert not checks["OAuth redirect"].free and checks["webhook endpoint"].free
    assert port_free("127.0.0.1", port)[0]
