"""Issue 10.8: ``ghl-desktop doctor`` says "disk full" when the data dir's disk is (nearly) full."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ghl_desktop.config import Settings
from ghl_desktop.doctor import Status, check_disk_space
from tests.fixtures.tiny_disk import tiny_disk


def test_disk_space_check_fails_on_a_full_disk_and_passes_when_freed(tmp_path: Path) -> None:
    with tiny_disk(tmp_path, "4m") as disk:
        settings = replace(Settings(), home=disk.path / "home")
        disk.fill()
        full = check_disk_space(settings)
        assert full.status is Status.FAIL and "disk full" in full.detail and "free some disk space" in full.hint
        disk.free()


def test_disk_space_check_passes_with_room(tmp_path: Path) -> None:
    result = check_disk_space(replace(Settings(), home=tmp_path))
    assert result.status is Status.OK and "MB free" in result.detail
