"""The README's Install section shows what the code does: the scopes and redirect URI to register,
the webhook paths, the data/log folders platformdirs gives, the keychain service, the bundle names."""

from __future__ import annotations

import re
from pathlib import Path

from ghl_desktop.adapters.ghl.oauth import app_registration
from ghl_desktop.adapters.secrets import SERVICE, VAULT_FILE_NAME
from ghl_desktop.config import APP_NAME
from ghl_desktop.logging_setup import LOG_FILE_NAME
from ghl_desktop.webhooks.endpoint import APP_PATH, PROVIDER_PATH

REPO = Path(__file__).resolve().parents[1]


def install_section() -> str:
    readme = (REPO / "README.md").read_text("utf-8")
    match = re.search(r"^## Install\n(.*?)^## ", readme, re.S | re.M)
    assert match, "README has no '## Install' section"
    return match.group(1)


def test_the_marketplace_app_steps_match_the_code() -> None:
    text = install_section()
    registration = app_registration()
    scopes_step = text[text.index("Scopes"):text.index("Redirect URL")]
    assert re.findall(r"`([a-z./]+)`", scopes_step) == list(registration.scopes)
    assert f"`{registration.redirect_uri}`" in text
    assert f"<your relay>{PROVIDER_PATH}`" in text and f"<your tunnel>{PROVIDER_PATH}`" in text
    assert f"{APP_PATH}`" in text


def test_the_folders_match_platformdirs() -> None:
    from platformdirs.macos import MacOS
    from platformdirs.unix import Unix

    text = install_section()
    home = str(Path.home())
    for dirs in (MacOS(APP_NAME, appauthor=False), Unix(APP_NAME, appauthor=False)):
        for path in (dirs.user_data_dir, dirs.user_log_dir):
            assert f"`{path.replace(home, '~', 1)}`" in text, path
    assert f"`%LOCALAPPDATA%\\{APP_NAME}`" in text and f"`%LOCALAPPDATA%\\{APP_NAME}\\Logs`" in text
    assert f"service `{SERVICE}`" in text and f"`{VAULT_FILE_NAME}`" in text and f"`{LOG_FILE_NAME}`" in text


def test_the_downloads_are_the_names_the_build_makes() -> None:
    text = install_section()
    spec = (REPO / "build.spec").read_text("utf-8")
    workflow = (REPO / ".github" / "workflows" / "dist.yml").read_text("utf-8")
    assert "-linux-{platform.machine()}.tar.gz" in spec and "ghl-desktop-<version>-linux-x86_64.tar.gz" in text
    assert "ghl-desktop-windows-x64.zip" in workflow and "ghl-desktop-windows-x64.zip" in text
    assert "-macos-$(uname -m).zip" in workflow and "ghl-desktop-<version>-macos-arm64.zip" in text
    for name in ("install.sh", "ghl-desktop.desktop", "ghl-desktop-console.exe", "ghl-desktop.app"):
        assert name in text and name in spec, name
