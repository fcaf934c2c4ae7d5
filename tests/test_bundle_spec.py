"""build.spec covers every file the app reads at run time — checked without building anything.

The spec is executed with stand-ins for PyInstaller's build steps (Analysis, PYZ, EXE, COLLECT): what
it would hand to ``Analysis`` (datas, binaries, excludes) is captured and compared with the files in
the source tree. A new migration, OpenAPI spec, webhook key or icon that the spec's entries do not
reach fails here instead of going silently missing from the double-click bundle (the frozen app
then fails at run time: no schema, sandbox won't start, no icon...).

PyInstaller is only in the ``build`` extra: when it is not installed, a minimal ``collect_data_files``
with PyInstaller's semantics stands in for it (``collect_submodules`` is always stubbed: it imports
every module in subprocesses, far too slow here, and hidden imports are not files).
"""

from __future__ import annotations

import ast
import contextlib
import glob
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "build.spec"
PACKAGE = REPO / "ghl_desktop"
MIGRATIONS = PACKAGE / "adapters" / "storage" / "migrations"

#: third-party packages whose data files the app reads as files at run time (not covered by a hook)
THIRD_PARTY_DATA = {
    # openapi-core's validators load their JSON meta-schemas with pathlib at import: the sandbox
    # (``headless --sandbox``, the window in sandbox mode) does not start without them
    "openapi_schema_validator": "schemas",
    "openapi_spec_validator": "resources/schemas",
}


# --- running the spec -------------------------------------------------------------------------


def _fallback_collect_data_files(
    package: str, include_py_files: bool = False, subdir: str | None = None, **_: Any
) -> list[tuple[str, str]]:
    """PyInstaller's collect_data_files for the cases build.spec uses (a package, maybe its .py files)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    base = Path(next(iter(spec.submodule_search_locations)))
    root = base / subdir if subdir else base
    found = []
    for path in root.rglob("*"):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        if path.suffix == ".py" and not include_py_files:
            continue
        dest = Path(*package.split(".")) / path.parent.relative_to(base)
        found.append((str(path), dest.as_posix()))
    return found


@contextlib.contextmanager
def _hooks_module() -> Iterator[None]:
    """Make ``from PyInstaller.utils.hooks import collect_data_files, collect_submodules`` cheap."""
    saved = {name: sys.modules.get(name) for name in ("PyInstaller", "PyInstaller.utils", "PyInstaller.utils.hooks")}
    try:
        from PyInstaller.utils import hooks as real  # type: ignore[import-not-found, import-untyped, unused-ignore]

        collect_data_files = real.collect_data_files
    except ImportError:
        collect_data_files = _fallback_collect_data_files
    fake = types.ModuleType("PyInstaller.utils.hooks")
    fake.collect_data_files = collect_data_files  # type: ignore[attr-defined]
    fake.collect_submodules = lambda *a, **k: []  # type: ignore[attr-defined]
    sys.modules.setdefault("PyInstaller", types.ModuleType("PyInstaller"))
    sys.modules.setdefault("PyInstaller.utils", types.ModuleType("PyInstaller.utils"))
    sys.modules["PyInstaller.utils.hooks"] = fake
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def run_spec(text: str, workpath: Path) -> dict[str, Any]:
    """Execute build.spec's text; return the keyword arguments it passes to ``Analysis``."""
    captured: dict[str, Any] = {}

    class Step:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            captured.setdefault(type(self).__name__, {"args": args, **kwargs})
            self.pure: list[Any] = []
            self.scripts: list[Any] = []
            self.binaries: list[Any] = []
            self.datas: list[Any] = []

    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__file__": str(SPEC),
        "SPECPATH": str(REPO),
        "workpath": str(workpath),  # where the spec may write generated files (runtime hooks)
        **{name: type(name, (Step,), {}) for name in ("Analysis", "PYZ", "EXE", "COLLECT")},
    }
    saved_path = list(sys.path)
    try:
        with _hooks_module():
            exec(compile(text, str(SPEC), "exec"), namespace)  # our own build file
    finally:
        sys.path[:] = saved_path
    assert "Analysis" in captured, "build.spec no longer calls Analysis(...)"
    result: dict[str, Any] = captured["Analysis"]
    return result


def bundled_paths(entries: list[tuple[str, str]]) -> set[str]:
    """Where each (source, destination) entry puts files inside the bundle, as PyInstaller does:
    a folder is copied with its tree, a file or glob match goes into the destination folder."""
    out: set[str] = set()
    for source, dest in entries:
        src = Path(source)
        if src.is_dir():
            out.update(
                (Path(dest) / f.relative_to(src)).as_posix()
                for f in src.rglob("*")
                if f.is_file() and "__pycache__" not in f.parts
            )
        else:
            matches = glob.glob(source) if any(c in source for c in "*?[") else [source]
            out.update((Path(dest) / Path(m).name).as_posix() for m in matches if Path(m).is_file())
    return out


# --- what the app reads at run time -------------------------------------------------------------


def _files(folder: Path, *, include_py: bool) -> list[Path]:
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and "__pycache__" not in f.parts
        and f.suffix not in (".pyc", ".pyo")
        and (include_py or f.suffix != ".py")
    )


def runtime_files() -> dict[str, Path]:
    """bundle path -> source file, for every file of this repo the app opens at run time."""
    wanted: dict[str, Path] = {}
    # package data: everything in ghl_desktop/ that is not Python source (OpenAPI specs + LICENSE,
    # webhook keys, anything added later), plus the migration scripts, which alembic reads as files
    for f in _files(PACKAGE, include_py=False) + _files(MIGRATIONS, include_py=True):
        wanted[f.relative_to(REPO).as_posix()] = f
    # resources/: icons and the .desktop file (ui/resources.py looks in sys._MEIPASS/resources)
    for f in _files(REPO / "resources", include_py=True):
        wanted[f.relative_to(REPO).as_posix()] = f
    for package, subdir in THIRD_PARTY_DATA.items():
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
        base = Path(next(iter(spec.submodule_search_locations)))
        for f in _files(base / subdir, include_py=False):
            wanted[f"{package}/{f.relative_to(base).as_posix()}"] = f
    return wanted


def missing_from(analysis: dict[str, Any]) -> list[str]:
    covered = bundled_paths(analysis["datas"])
    return sorted(path for path in runtime_files() if path not in covered)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_spec(SPEC.read_text("utf-8"), tmp_path_factory.mktemp("spec-work"))


# --- tests ------------------------------------------------------------------------------------


def test_the_runtime_files_exist_where_the_test_looks() -> None:
    """Guards the globs below: an empty list would make every coverage check pass."""
    wanted = runtime_files()
    for path in (
        "ghl_desktop/adapters/storage/migrations/env.py",
        "ghl_desktop/adapters/storage/migrations/script.py.mako",
        "ghl_desktop/sandbox/openapi/LICENSE",
        "ghl_desktop/sandbox/openapi/apps/conversations.json",
        "ghl_desktop/webhooks/keys/highlevel_ed25519.pem",
        "ghl_desktop/webhooks/keys/highlevel_rsa.pem",
        "resources/ghl-desktop.png",
        "resources/ghl-desktop.svg",
        "resources/ghl-desktop.desktop",
    ):
        assert path in wanted, path
    assert any(p.startswith("ghl_desktop/adapters/storage/migrations/versions/0") for p in wanted)
    for package in THIRD_PARTY_DATA:
        assert any(p.startswith(f"{package}/") and p.endswith(".json") for p in wanted), package


def test_every_file_read_at_run_time_is_in_the_bundle(analysis: dict[str, Any]) -> None:
    assert missing_from(analysis) == []


def test_neonize_library_is_bundled_next_to_the_neonize_package(analysis: dict[str, Any]) -> None:
    from ghl_desktop.doctor import neonize_library_path

    library, _version = neonize_library_path()
    assert library is not None
    assert (str(library), "neonize") in analysis["binaries"]
    assert str(library.parent / "proto") in analysis["pathex"]  # the _pb2 modules' top-level imports


def test_libmagic_database_ships_with_a_hook_pointing_at_it(analysis: dict[str, Any]) -> None:
    """python-magic's libmagic gets bundled; its compiled database only through the spec."""
    dbs = [(src, dest) for src, dest in analysis["datas"] if Path(src).name == "magic.mgc"]
    hooks = analysis.get("runtime_hooks") or []
    if not dbs:
        pytest.skip("no libmagic database on this build machine")
    assert [dest for _, dest in dbs] == ["magic_db"]
    assert len(hooks) == 1
    hook = Path(hooks[0]).read_text("utf-8")
    assert "'magic_db', 'magic.mgc'" in hook and "MAGIC" in hook
    compile(hook, hooks[0], "exec")


def test_nothing_the_app_imports_is_excluded(analysis: dict[str, Any]) -> None:
    excluded = set(analysis["excludes"])
    imported: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    clashes = sorted(
        name for name in imported if any(name == ex or name.startswith(ex + ".") for ex in excluded)
    )
    assert clashes == []


@pytest.mark.parametrize(
    ("needle", "expected_missing"),
    [
        ('(str(migrations), "ghl_desktop/adapters/storage/migrations"),', "migrations/env.py"),
        ('*collect_data_files("ghl_desktop", include_py_files=False),', "webhooks/keys/highlevel_rsa.pem"),
        ('(str(ROOT / "resources"), "resources"),', "resources/ghl-desktop.svg"),
        ('*collect_data_files("openapi_schema_validator"),', "openapi_schema_validator/schemas/"),
    ],
)
def test_the_check_fails_when_an_entry_is_removed(needle: str, expected_missing: str, tmp_path: Path) -> None:
    """The coverage check can fail: the spec minus one of its data entries leaves files out."""
    text = SPEC.read_text("utf-8")
    assert needle in text, f"build.spec changed shape; update this test ({needle!r} not found)"
    missing = missing_from(run_spec(text.replace(needle, "", 1), tmp_path))
    assert any(expected_missing in path for path in missing), missing
