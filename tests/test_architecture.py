"""The layering rules, checked on the source so a violation fails the suite (and import-linter in CI)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ghl_desktop"
FORBIDDEN_IN_CORE = {"PySide6", "httpx", "sqlalchemy", "aiohttp", "neonize", "qasync", "alembic", "keyring"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(folder: str, forbidden: set[str]) -> list[str]:
    bad = []
    for file in sorted((PKG / folder).rglob("*.py")):
        for name in _imports(file):
            if name.split(".")[0] in forbidden or any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{file.relative_to(PKG.parent)} imports {name}")
    return bad


def test_core_has_no_framework_imports() -> None:
    assert _violations("core", FORBIDDEN_IN_CORE) == []


def test_services_do_not_import_ui() -> None:
    assert _violations("services", {"ghl_desktop.ui", "PySide6"}) == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import sqlalchemy\nfrom PySide6.QtCore import QObject\n")
    assert {"sqlalchemy", "PySide6.QtCore"} <= _imports(bad)


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=PKG.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "ghl_desktop", "tests", "bench"], cwd=PKG.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
