"""`ghl-desktop doctor`: one line per check, fix hints on failures, exit 1 when anything failed."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from ghl_desktop.adapters.secrets import KeyringSecretStore, ScryptParams, VaultSecretStore
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.doctor import (
    Status,
    check_credentials,
    check_notifications,
    check_ports_free,
    check_provider_id,
    check_redirect_uri,
    check_secrets,
)
from ghl_desktop.services.setup_checks import CLIENT_SECRET_KEY, SetupService
from tests.fakes.secrets import MemorySecretStore

LINE = re.compile(r"^(ok  |warn|FAIL) (?P<name>[^:]+): (?P<detail>.+)$")
CHECK_NAMES = [
    "Python",
    "Qt platform plugin",
    "neonize library",
    "libmagic",
    "ffmpeg/ffprobe",
    "data dir writable",
    "disk space",
    "database migrates",
    "secret store",
    "HighLevel credentials",
    "provider ID",
    "redirect URI",
    "OAuth/webhook ports free",
    "notification service / tray",
]


def storage_available() -> bool:
    try:
        from ghl_desktop.adapters.storage import open_database  # noqa: F401
    except ImportError:
        return False
    return True


def doctor(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, GHL_DESKTOP_HOME=str(home), QT_QPA_PLATFORM="offscreen", **env)
    return subprocess.run(
        [sys.executable, "-m", "ghl_desktop", "doctor"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=180,
        check=False,
    )


def parse(stdout: str) -> dict[str, str]:
    lines = stdout.strip().splitlines()
    out = {}
    for line in lines:
        m = LINE.match(line)
        assert m, f"line does not follow the format: {line!r}"
        out[m["name"]] = line
    assert list(out) == CHECK_NAMES
    return out


def test_doctor_on_a_healthy_machine(data_home: Path) -> None:
    proc = doctor(data_home)
    lines = parse(proc.stdout)
    assert lines["Python"].startswith("ok ")
    assert lines["Qt platform plugin"].startswith("ok   Qt platform plugin: 'offscreen' loads")
    assert lines["neonize library"].startswith("ok   neonize library: neonize-") and "0.5.2" in lines["neonize library"]
    assert lines["data dir writable"] == f"ok   data dir writable: {data_home}"
    assert (
        lines["HighLevel credentials"].startswith("warn")
        and "sandbox mode will be used" in lines["HighLevel credentials"]
    )
    if storage_available():
        assert lines["database migrates"].startswith("ok ")
        assert (data_home / "ghl-desktop.db").exists()
    failed = [line for line in lines.values() if line.startswith("FAIL")]
    assert proc.returncode == (1 if failed else 0), proc.stdout
    if storage_available():
        assert not failed, failed


def test_unwritable_data_dir_fails_with_a_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")  # fails even for root, unlike chmod
    proc = doctor(blocker / "home")
    lines = parse(proc.stdout)
    assert proc.returncode == 1
    assert lines["data dir writable"].startswith(f"FAIL data dir writable: {blocker / 'home'}")
    assert "— fix: set GHL_DESKTOP_HOME to a folder you can write" in lines["data dir writable"]
    assert lines["database migrates"].startswith("FAIL")
    assert " — fix: " in lines["database migrates"]


def test_a_qt_platform_that_does_not_load_fails_with_a_hint(data_home: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ghl_desktop.doctor import check_qt; from ghl_desktop.config import "
            "load_settings; print(check_qt(load_settings()).line())",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, QT_QPA_PLATFORM="no-such-platform"),
    )
    line = proc.stdout.strip()
    assert line.startswith("FAIL Qt platform plugin: 'no-such-platform' does not load"), proc.stdout + proc.stderr
    assert "— fix: install Qt's system libraries" in line


def test_credentials_line(monkeypatch: pytest.MonkeyPatch, threaded_sandbox: ThreadedSandbox) -> None:
    assert check_credentials(load_settings()).status is Status.WARN
    monkeypatch.setenv("GHL_API_BASE", threaded_sandbox.url)
    monkeypatch.setenv("GHL_CLIENT_ID", threaded_sandbox.client_id)
    monkeypatch.setenv("GHL_CLIENT_SECRET", threaded_sandbox.client_secret)
    result = check_credentials(load_settings())
    assert result.status is Status.OK, result.line()
    assert f"client id {threaded_sandbox.client_id} accepted by {threaded_sandbox.url}" in result.line()
    assert threaded_sandbox.client_secret not in result.line()


def test_secret_store_line_names_keyring_or_vault(data_home: Path) -> None:
    assert check_secrets(load_settings()).line().startswith("ok   secret store: system keyring")
    keyring.set_keyring(fail.Keyring())  # the autouse fixture restores the previous backend
    result = check_secrets(load_settings())
    assert result.status is Status.WARN and "GHL_DESKTOP_VAULT_PASSPHRASE" in result.line()
    VaultSecretStore(data_home / "secrets.vault", "pp", params=ScryptParams(log2_n=10))
    result = check_secrets(load_settings())
    assert result.status is Status.OK and "encrypted vault" in result.detail


# --- the first-run checks (shared with the wizard: ghl_desktop/services/setup_checks.py) ----------


@dataclass
class ThreadedSandbox:
    url: str
    client_id: str
    client_secret: str
    provider_id: str


@pytest.fixture
def threaded_sandbox() -> Iterator[ThreadedSandbox]:
    """The HighLevel sandbox on its own loop in a thread: the doctor's checks are synchronous."""
    from ghl_desktop.sandbox.server import running_sandbox

    ready: queue.Queue[ThreadedSandbox | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with running_sandbox(status_race_seconds=0.0) as sb:
                ready.put(ThreadedSandbox(sb.url, sb.client_id, sb.client_secret, sb.provider_id))
                await stop.wait()
        except BaseException as exc:
            ready.put(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    got = ready.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_credentials_are_probed_at_the_token_endpoint(threaded_sandbox: ThreadedSandbox, data_home: Path) -> None:
    sb = threaded_sandbox
    refused = check_credentials(Settings(home=data_home, api_base=sb.url, client_id=sb.client_id,
                                         client_secret="stale-secret"))
    assert refused.status is Status.FAIL
    assert "refused the client ID or secret" in refused.line() and " — fix: copy both again" in refused.line()
    assert "stale-secret" not in refused.line()
    down = check_credentials(Settings(home=data_home, api_base=f"http://127.0.0.1:{closed_port()}",
                                      client_id=sb.client_id, client_secret=sb.client_secret))
    assert down.status is Status.WARN and "could not be checked: Network error" in down.line()
    assert "refused the connection" in down.line()
    # a secret saved by the window's setup (secret store only) is used too
    KeyringSecretStore().set(CLIENT_SECRET_KEY, sb.client_secret)
    stored = check_credentials(Settings(home=data_home, api_base=sb.url, client_id=sb.client_id))
    assert stored.status is Status.OK, stored.line()


def test_provider_id_line(data_home: Path) -> None:
    sandbox_mode = check_provider_id(Settings(home=data_home))
    assert sandbox_mode.status is Status.OK and "sandbox" in sandbox_mode.detail
    missing = check_provider_id(Settings(home=data_home, client_id="app"))
    assert missing.status is Status.FAIL and "GHL_PROVIDER_ID" in missing.line()
    assert check_provider_id(Settings(home=data_home, client_id="app", provider_id="My Provider")).status \
        is Status.FAIL
    good = check_provider_id(Settings(home=data_home, client_id="app", provider_id="65f1c2d3e4a5b6c7d8e9f001"))
    assert good.status is Status.OK and "65f1c2d3e4a5b6c7d8e9f001" in good.line()


def test_redirect_uri_line_shows_the_listeners_address(data_home: Path) -> None:
    settings = Settings(home=data_home, oauth_redirect_port=53999)
    line = check_redirect_uri(settings).line()
    assert line.startswith("ok   redirect URI: http://127.0.0.1:53999/oauth/callback — register exactly this")
    SetupService(settings, MemorySecretStore()).confirm_redirect_registered()
    assert "(confirmed registered in the setup)" in check_redirect_uri(settings).line()
    moved = check_redirect_uri(Settings(home=data_home, oauth_redirect_port=54000))
    assert moved.status is Status.WARN and "register the new address" in moved.line()


def test_a_busy_port_fails_with_a_hint_and_a_running_app_only_warns(data_home: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        busy = check_ports_free(Settings(home=data_home, oauth_redirect_port=port, webhook_port=closed_port()))
        assert busy.status is Status.FAIL
        assert f"OAuth redirect 127.0.0.1:{port}" in busy.line() and "GHL_OAUTH_REDIRECT_PORT" in busy.line()
    free = check_ports_free(Settings(home=data_home, oauth_redirect_port=closed_port(), webhook_port=closed_port()))
    assert free.status is Status.OK and free.detail.endswith("free")
    relay_mode = check_ports_free(Settings(home=data_home, oauth_redirect_port=closed_port(), webhook_port=port,
                                           relay_url="https://relay.example"))
    assert "webhook endpoint" not in relay_mode.line()  # relay mode does not listen for webhooks


def test_the_app_s_own_webhook_endpoint_on_the_port_is_recognised(data_home: Path) -> None:
    from ghl_desktop.webhooks.endpoint import WebhookServer
    from ghl_desktop.webhooks.gate import WebhookGate
    from ghl_desktop.webhooks.intake import WebhookIntake
    from ghl_desktop.webhooks.verify import SignatureVerifier
    from tests.fakes.job_queue import MemoryJobQueue
    from tests.webhooks.signing import SigningKeys

    keys = SigningKeys()
    loop = asyncio.new_event_loop()
    gate = WebhookGate(SignatureVerifier.from_values(keys.ed25519_public_pem, keys.rsa_public_pem))
    server = WebhookServer(Settings(home=data_home), WebhookIntake(MemoryJobQueue().aio), gate=gate, port=0)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
        port = int(url.rsplit(":", 1)[1])
        result = check_ports_free(Settings(home=data_home, oauth_redirect_port=closed_port(), webhook_port=port))
        assert result.status is Status.WARN and "in use by a running ghl-desktop" in result.line()
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class PrivateBus:
    """A private D-Bus session bus (dbus-daemon) and, on demand, a tiny notification server owning
    org.freedesktop.Notifications on it (jeepney), answering GetServerInformation."""

    def __init__(self, tmp: Path) -> None:
        # no service directories: nothing is D-Bus activatable, so the test decides who owns the name
        config = tmp / "bus.conf"
        config.write_text(
            "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN'"
            " 'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'>"
            f"<busconfig><type>session</type><listen>unix:dir={tmp}</listen>"
            "<auth>EXTERNAL</auth><policy context='default'><allow send_destination='*' eavesdrop='true'/>"
            "<allow eavesdrop='true'/><allow own='*'/></policy></busconfig>"
        )
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        self._server: threading.Thread | None = None
        self._conn: object | None = None

    def serve_notifications(self) -> None:
        from jeepney import MessageType, new_method_return
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(self.address)
        reply = conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.Notifications"), timeout=5)
        assert reply.body[0] == 1  # primary owner
        self._conn = conn

        def loop() -> None:
            while True:
                try:
                    msg = conn.receive()
                except Exception:
                    return
                if msg.header.message_type is MessageType.method_call and \
                        msg.header.fields.get(3) == "GetServerInformation":  # 3 = member
                    conn.send(new_method_return(msg, "ssss", ("test-notifyd", "ghl-tests", "1.0", "1.2")))

        self._server = threading.Thread(target=loop, daemon=True)
        self._server.start()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # type: ignore[attr-defined]
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()  # an unclosed pipe is a ResourceWarning (an error in the suite)


@pytest.fixture
def private_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    if shutil.which("dbus-daemon") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but dbus-daemon is not installed")
        pytest.skip("dbus-daemon is not installed")
    bus = PrivateBus(tmp_path)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus.address)
    try:
        yield bus
    finally:
        bus.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="D-Bus notifications are the Linux path")
def test_notification_service_is_found_on_the_session_bus(private_bus: PrivateBus, data_home: Path) -> None:
    absent = check_notifications(Settings(home=data_home))
    assert absent.status is Status.WARN
    assert "nothing owns org.freedesktop.Notifications on the session bus" in absent.line()
    assert "run a notification daemon" in absent.line()
    private_bus.serve_notifications()
    present = check_notifications(Settings(home=data_home))
    assert "org.freedesktop.Notifications is provided by test-notifyd 1.0" in present.line()
    # the offscreen Qt platform has no tray: still a warning, with the tray hint only
    assert "no system tray on the 'offscreen' platform" in present.line()
    assert present.status is Status.WARN and "run a notification daemon" not in present.line()


def test_no_session_bus_is_a_warning_not_a_hang(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 data_home: Path) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    result = check_notifications(Settings(home=data_home))
    assert result.status is Status.WARN and "session bus does not answer" in result.line()
