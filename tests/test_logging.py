"""The log file exists where the settings say, rotates, and never contains a token or secret."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghl_desktop.config import load_settings
from ghl_desktop.logging_setup import REDACTED, LoggingSetup, RedactingFilter, configure_logging

ACCESS_JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJsb2NhdGlvbklkIjoibG9jMSJ9.Zm9vYmFyYmF6cXV4c2lnbmF0dXJl"
REFRESH_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyZWZyZXNoIjp0cnVlLCJ4IjoxfQ.c2VjcmV0LXJlZnJlc2gtc2lnbmF0dXJl"
OPAQUE = "ya29.a0AfH6SMBopaque-token-9f8e7d"
CLIENT_SECRET = "cs_live_7f3e9a1b2c4d"
AUTH_CODE = "b1946ac92492d2347c6235b4d2611184"


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoggingSetup]:
    monkeypatch.setenv("GHL_CLIENT_SECRET", CLIENT_SECRET)
    result = configure_logging(load_settings(), console=False)
    yield result
    result.close()


def read_log(setup: LoggingSetup) -> str:
    for handler in setup.handlers:
        handler.flush()
    return setup.log_file.read_text("utf-8")


def test_log_file_is_in_the_settings_log_dir(setup: LoggingSetup, data_home: object) -> None:
    assert setup.log_file == load_settings().log_dir / "ghl-desktop.log"
    logging.getLogger("ghl.test").info("started")
    assert "ghl.test: started" in read_log(setup)


def test_each_kind_of_secret_is_removed_and_context_kept(setup: LoggingSetup) -> None:
    log = logging.getLogger("ghl.test")
    log.info("GET /contacts headers={'Authorization': 'Bearer %s'}", OPAQUE)
    log.info("token exchange ok for location loc1: %s", ACCESS_JWT)
    log.info("POST /oauth/token body=grant_type=refresh_token&refresh_token=%s&client_id=abc", REFRESH_JWT)
    log.info('response {"access_token": "%s", "expires_in": 86399, "locationId": "loc1"}', OPAQUE)
    log.info("form client_secret=%s&client_id=app-123", "literal-secret-in-form")
    log.warning("the configured secret leaked into a message: %s", CLIENT_SECRET)
    log.info("callback GET /oauth/callback?code=%s&state=st-42", AUTH_CODE)
    log.info("python repr {'refresh_token': '%s', 'userType': 'Location'}", "plain-refresh-value")
    text = read_log(setup)
    for secret in (
        ACCESS_JWT,
        REFRESH_JWT,
        OPAQUE,
        CLIENT_SECRET,
        AUTH_CODE,
        "literal-secret-in-form",
        "plain-refresh-value",
    ):
        assert secret not in text, secret
    # the surrounding context survives, so the log is still useful
    for context in (
        "GET /contacts",
        "Bearer " + REDACTED,
        "location loc1",
        "grant_type=refresh_token",
        "client_id=abc",
        '"expires_in": 86399',
        '"locationId": "loc1"',
        "client_id=app-123",
        "state=st-42",
        "'userType': 'Location'",
        "WARNING",
        "ghl.test",
    ):
        assert context in text, context


def test_exception_text_and_args_are_scrubbed(setup: LoggingSetup) -> None:
    log = logging.getLogger("ghl.ghl.client")
    try:
        raise RuntimeError(f"refresh failed for refresh_token={OPAQUE} (Bearer {OPAQUE})")
    except RuntimeError:
        log.exception("refresh of %s failed", ACCESS_JWT)
    text = read_log(setup)
    assert OPAQUE not in text and ACCESS_JWT not in text
    assert "RuntimeError: refresh failed for refresh_token=" + REDACTED in text
    assert "Traceback" in text


def test_third_party_loggers_are_scrubbed_too(setup: LoggingSetup) -> None:
    logging.getLogger("httpx").warning("HTTP Request: POST https://x/oauth/token?code=%s", AUTH_CODE)
    assert AUTH_CODE not in read_log(setup)


def test_secrets_added_at_run_time_are_redacted(setup: LoggingSetup) -> None:
    setup.redactor.add_secret("token-from-keyring-123")
    logging.getLogger("ghl.test").info("value token-from-keyring-123 seen")
    text = read_log(setup)
    assert "token-from-keyring-123" not in text
    assert f"value {REDACTED} seen" in text


def test_ordinary_words_survive() -> None:
    f = RedactingFilter()
    f.add_secret("abc")  # too short to redact safely: ignored
    text = "status_code=200 error_code=E1 abc zipcode=90210 the code path"
    assert f.redact(text) == text


def test_reconfiguring_replaces_handlers_instead_of_stacking(setup: LoggingSetup) -> None:
    again = configure_logging(load_settings(), console=True)
    try:
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_ghl_desktop", False)]
        assert len(ours) == 2
    finally:
        again.close()


def test_rotation_keeps_backups(monkeypatch: pytest.MonkeyPatch) -> None:
    rotating = configure_logging(load_settings(), console=False, max_bytes=2000, backup_count=2)
    try:
        log = logging.getLogger("ghl.test")
        for i in range(200):
            log.info("line %d with some padding to fill the file quickly", i)
        files = sorted(p.name for p in rotating.log_file.parent.iterdir())
        assert files == ["ghl-desktop.log", "ghl-desktop.log.1", "ghl-desktop.log.2"]
    finally:
        rotating.close()


def test_neonize_import_after_configure_adds_no_second_handler(data_home: object) -> None:
    """neonize's import calls logging.basicConfig(INFO); configured first, that is a no-op."""
    code = (
        "import logging\n"
        "from ghl_desktop.config import load_settings\n"
        "from ghl_desktop.logging_setup import configure_logging\n"
        "configure_logging(load_settings(), console=False)\n"
        "import neonize\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), all(getattr(h, '_ghl_desktop', False) for h in root.handlers))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True"]


_FORGED = "2026-12-03 12:00:00,000 CRITICAL ghl.bridge: all messages deleted"


def _records_are_single_lines(text: str) -> None:
    """Every line is a record (starts with the date) or an indented traceback/stack line."""
    import re

    for line in text.splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) or line.startswith("  | "), line
        assert not line.startswith(_FORGED), line


def test_control_characters_cannot_forge_log_lines(setup: LoggingSetup) -> None:
    """Issue 10.9: CR/LF in text an outsider controls used to start a fake record of its own."""
    log = logging.getLogger("ghl.test")
    log.warning("refused webhook type %s", f"X\r\n{_FORGED}")
    log.info("term escape \x1b[2J and separators \u2028\u2029 and \x85 and tab\t")
    try:
        raise ValueError(f"bad value\n{_FORGED}")
    except ValueError:
        log.exception("handler failed on %s", f"id\r{_FORGED}")
    text = read_log(setup)
    _records_are_single_lines(text)
    assert f"X\\r\\n{_FORGED}" in text
    assert "\\x1b[2J" in text and "\\u2028\\u2029" in text and "\\x85" in text and "tab\\t" in text
    assert f"  | {_FORGED}" in text  # the exception's own line break stays, indented


@pytest.mark.asyncio
async def test_an_oauth_error_through_the_relay_cannot_forge_log_lines(setup: LoggingSetup, tmp_path: Path) -> None:
    """The unauthenticated path from the issue: /oauth/callback?error=... on the relay, logged on the desktop."""
    import aiohttp

    from ghl_desktop.core.errors import OAuthError
    from ghl_desktop.relay.client import RelayClient
    from ghl_desktop.relay.server import RelayServer
    from ghl_desktop.relay.store import RelayStore
    from ghl_desktop.webhooks.gate import WebhookGate
    from ghl_desktop.webhooks.intake import WebhookIntake
    from ghl_desktop.webhooks.verify import SignatureVerifier
    from tests.fakes.job_queue import MemoryJobQueue

    store = RelayStore.open(f"sqlite:///{tmp_path / 'relay.db'}")
    relay = RelayServer(store, WebhookGate(SignatureVerifier.from_values(None, None, True)))
    await relay.start()
    client = RelayClient(relay.url, store.create_token("d"), WebhookIntake(MemoryJobQueue().aio))
    try:
        client.start()
        state = "state-for-the-log-test"
        await client.expect_authorization(state)
        async with aiohttp.ClientSession() as http, http.get(
                relay.url + "/oauth/callback", params={"error": f"denied\r\n{_FORGED}", "state": state}) as resp:
            assert resp.status == 200
        with pytest.raises(OAuthError):
            await client.wait_authorization(state, 20)
    finally:
        await client.stop()
        await relay.stop()
        store.close()
    text = read_log(setup)
    assert "OAuth redirect received through the relay" in text
    _records_are_single_lines(text)


def test_log_dir_and_every_log_file_including_rotated_ones_are_private(data_home: object) -> None:
    """Issue 10.7: rotated logs were created 0644 (the umask), the current one chmod-ed only once."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        rotating = configure_logging(load_settings(), console=False, max_bytes=2000, backup_count=2)
        try:
            log = logging.getLogger("ghl.test")
            for i in range(200):
                log.info("line %d with some padding to fill the file quickly", i)
            files = sorted(rotating.log_file.parent.iterdir())
            assert [p.name for p in files] == ["ghl-desktop.log", "ghl-desktop.log.1", "ghl-desktop.log.2"]
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert stat.S_IMODE(rotating.log_file.parent.stat().st_mode) == 0o700
        finally:
            rotating.close()
    finally:
        os.umask(old)
