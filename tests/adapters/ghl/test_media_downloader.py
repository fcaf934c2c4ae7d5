"""Issue 10.2, SSRF through attachments: what the downloader fetches is sent to a customer's phone, so
it must never reach loopback, private, link-local (cloud metadata) or other internal addresses — not
directly, not through a redirect, not through a DNS name — and it caps redirects, size and names."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from ghl_desktop.adapters.ghl import create_http_client
from ghl_desktop.adapters.ghl.gateway import MAX_MEDIA_REDIRECTS, MediaDownloader, safe_file_name
from ghl_desktop.config import Settings
from ghl_desktop.core.errors import GhlBadRequest, GhlTransientError, MediaTooLarge


class Servers:
    """Two loopback servers: ``media`` (stands in for a public CDN, allow-listed) and ``secret`` (an
    internal page that must never be fetched)."""

    def __init__(self) -> None:
        self.secret_hits = 0
        self.media_url = ""
        self.secret_url = ""
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        async def secret(_request: web.Request) -> web.Response:
            self.secret_hits += 1
            return web.Response(text="internal admin page", content_type="text/html")

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(request.query["to"])

        async def loop(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            raise web.HTTPFound(f"/loop/{n + 1}")

        async def file(request: web.Request) -> web.Response:
            return web.Response(body=b"\x89PNG" + b"0" * int(request.query.get("size", "10")),
                                content_type="image/png")

        secret_app = web.Application()
        secret_app.router.add_get("/secret", secret)
        media_app = web.Application()
        media_app.router.add_get("/redirect", redirect)
        media_app.router.add_get("/loop/{n}", loop)
        media_app.router.add_get("/{tail:.*}", file)
        self.secret_url = await self._serve(secret_app) + "/secret"
        self.media_url = await self._serve(media_app)

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    await s.start()
    yield s
    await s.stop()


@pytest.mark.asyncio
async def test_a_redirect_to_a_loopback_page_is_not_fetched(servers: Servers, http: httpx.AsyncClient) -> None:
    """The red-team case: the attachment host (here allow-listed as if public) answers 302 to an
    internal page. Before the fix the page's HTML was delivered to the phone."""
    fetch = MediaDownloader(http, test_loopback_origins=[servers.media_url])
    assert (await fetch(servers.media_url + "/ok.png", 1000)).data.startswith(b"\x89PNG")
    with pytest.raises(GhlBadRequest, match="not a public address"):
        await fetch(f"{servers.media_url}/redirect?to={servers.secret_url}", 1_000_000)
    assert servers.secret_hits == 0


@pytest.mark.asyncio
async def test_production_downloader_refuses_loopback_outright(servers: Servers, http: httpx.AsyncClient) -> None:
    fetch = MediaDownloader(http)  # no allow-list: what production runs
    for url in (servers.secret_url, servers.media_url + "/a.png"):
        with pytest.raises(GhlBadRequest, match="not a public address"):
            await fetch(url, 1_000_000)
    assert servers.secret_hits == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/x", "http://127.1.2.3/x", "http://localhost/x", "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/x",
    "http://172.16.1.1/x", "http://192.168.1.1/x", "http://100.100.100.200/x", "http://0.0.0.0/x",
    "http://[fd00:ec2::254]/x", "http://[fe80::1]/x", "http://224.0.0.1/x", "http://[64:ff9b::7f00:1]/x",
])
async def test_internal_addresses_are_refused_before_connecting(http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(GhlBadRequest, match="not a public address"):
        await MediaDownloader(http)(url, 1000)


@pytest.mark.asyncio
@pytest.mark.parametrize("answer", [["10.0.0.5"], ["93.184.216.34", "127.0.0.1"], ["::1"]])
async def test_a_public_name_resolving_to_an_internal_address_is_refused(http: httpx.AsyncClient,
                                                                         answer: list[str]) -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        assert (host, port) == ("cdn.example.com", 443)
        return answer

    with pytest.raises(GhlBadRequest, match="not a public address"):
        await MediaDownloader(http, resolver=resolver)("https://cdn.example.com/a.png", 1000)


@pytest.mark.asyncio
async def test_the_connection_goes_to_the_checked_address(servers: Servers, http: httpx.AsyncClient) -> None:
    """DNS rebinding: the name is resolved once, checked, and that very address is connected to."""
    port = int(servers.media_url.rsplit(":", 1)[1])
    calls: list[str] = []

    async def resolver(host: str, port_: int) -> Sequence[str]:
        calls.append(host)
        return ["127.0.0.1"]

    fetch = MediaDownloader(http, test_loopback_origins=[f"http://media.test:{port}"], resolver=resolver)
    got = await fetch(f"http://media.test:{port}/pic.png", 1000)
    assert got.data.startswith(b"\x89PNG") and calls == ["media.test"]


@pytest.mark.asyncio
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a", "gopher://example.com/",
                                 "http://user:pw@example.com/a.png", "not a url at all"])
async def test_only_plain_http_and_https_urls(http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(GhlBadRequest):
        await MediaDownloader(http)(url, 1000)


@pytest.mark.asyncio
async def test_redirects_are_capped(servers: Servers, http: httpx.AsyncClient) -> None:
    fetch = MediaDownloader(http, test_loopback_origins=[servers.media_url])
    with pytest.raises(GhlBadRequest, match=f"more than {MAX_MEDIA_REDIRECTS}"):
        await fetch(servers.media_url + "/loop/0", 1000)


@pytest.mark.asyncio
async def test_size_is_capped(servers: Servers, http: httpx.AsyncClient) -> None:
    fetch = MediaDownloader(http, test_loopback_origins=[servers.media_url])
    with pytest.raises(MediaTooLarge):
        await fetch(servers.media_url + "/big.png?size=5000", 1000)


@pytest.mark.asyncio
async def test_names_from_the_url_are_sanitised(servers: Servers, http: httpx.AsyncClient) -> None:
    fetch = MediaDownloader(http, test_loopback_origins=[servers.media_url])
    got = await fetch(servers.media_url + "/a/..%2F..%2Fpayload.sh", 1000)
    assert got.file_name == "payload.sh"


@pytest.mark.parametrize(("raw", "name"), [
    ("/a/../../payload.sh", "payload.sh"), ("..%2F..%2F.bashrc", "bashrc"), ("/x/..%5C..%5Cwin.bat", "win.bat"),
    ("/dir/", "attachment"), ("/%00evil%0d%0a.png", "evil_.png"), ("/" + "a" * 300 + ".pdf", "a" * 116 + ".pdf"),
    ("/report%20Q3.pdf", "report Q3.pdf"), ("/..", "attachment"),
])
def test_safe_file_name(raw: str, name: str) -> None:
    assert safe_file_name(raw) == name


def _tls_pair(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA and a certificate for ``name`` signed by it: (server context, client context
    trusting only that CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


@pytest.mark.asyncio
async def test_a_pinned_https_fetch_verifies_the_certificate_for_the_name(tmp_path: Path) -> None:
    """The connection goes to the checked IP, yet TLS still sends the URL's name (SNI) and verifies the
    certificate for it: a server whose certificate is for another name is refused."""
    server_tls, client_tls = _tls_pair(tmp_path, "media.test")
    seen: list[tuple[str | None, str]] = []
    sni: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment]

    async def file(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Connection"), request.host))
        return web.Response(body=b"\x89PNG0000", content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", file)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]

    async def resolver(host: str, port_: int) -> Sequence[str]:
        return ["127.0.0.1"]

    origins = [f"https://media.test:{port}", f"https://other.test:{port}"]
    try:
        async with create_http_client(Settings(api_base="http://127.0.0.1:9"), verify=client_tls) as http:
            fetch = MediaDownloader(http, test_loopback_origins=origins, resolver=resolver)
            got = await fetch(f"https://media.test:{port}/pic.png", 1000)
            assert got.data == b"\x89PNG0000"
            assert sni == ["media.test"] and seen == [("close", f"media.test:{port}")]
            with pytest.raises(GhlTransientError, match="attachment download failed"):
                await fetch(f"https://other.test:{port}/pic.png", 1000)  # certificate is for media.test
            assert sni == ["media.test", "other.test"] and len(seen) == 1
    finally:
        await runner.cleanup()
