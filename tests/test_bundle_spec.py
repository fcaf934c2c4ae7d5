"""build.spec covers every file the app reads at run time — checked without building anything.

The spec is executed with stand-ins for PyInstaller's build steps (Analysis, PYZ, EXE, COLLECT): what
it would hand to ``Analysis`` (datas, binaries, excludes) is captured and compared with the files in
the source tree. A new migration, OpenAPI spec, webhook key or icon that the spec's entries do not
reach fails here instead of going silently missing from the double-click bundle (the frozen app
then fails at run time: no schema, sandbox won't start, no icon...). Files are discovered, not
listed: every non-Python file under ghl_desktop/ and resources/ (so a new page, icon or key is
covered the day it is added), plus every data file name a string literal in the code mentions.
The per-OS parts (macOS .app and its Info.plist, Windows windowed + console exe, the Linux tar.gz
with its launchers) are checked by running the spec as that OS would (``PLATFORM``).

PyInstaller is only in the ``build`` extra: when it is not installed, a minimal ``collect_data_files``
with PyInstaller's semantics stands in for it (``collect_submodules`` is always stubbed: it imports
every module in subprocesses, far too slow here, and hidden imports are not files).
"""

from __future__ import annotations

import ast
import contextlib
import glob
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
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
    # desktop-notifier (desktop notices) resolves its default icon with importlib.resources at import:
    # without it the frozen import fails and notices silently fall back to the tray balloon
    "desktop_notifier": "resources",
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


def run_spec_steps(text: str, workpath: Path, *, platform: str | None = None,
                   distpath: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Execute build.spec's text; return every build step it called (Analysis, EXE, BUNDLE, ...)
    with its arguments. ``platform`` plays another OS (the spec's ``PLATFORM``); ``distpath`` makes
    the spec's post-build packaging run on that folder (as PyInstaller's DISTPATH)."""
    captured: dict[str, list[dict[str, Any]]] = {}

    class Step:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            captured.setdefault(type(self).__name__, []).append({"args": args, **kwargs})
            self.pure: list[Any] = []
            self.scripts: list[Any] = []
            self.binaries: list[Any] = []
            self.datas: list[Any] = []

    if platform is not None:
        assert "\nPLATFORM = sys.platform\n" in text, "build.spec no longer sets PLATFORM from sys.platform"
        text = text.replace("\nPLATFORM = sys.platform\n", f"\nPLATFORM = {platform!r}\n", 1)
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__file__": str(SPEC),
        "SPECPATH": str(REPO),
        "workpath": str(workpath),  # where the spec may write generated files (runtime hooks)
        **{name: type(name, (Step,), {}) for name in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE")},
    }
    if distpath is not None:
        namespace["DISTPATH"] = str(distpath)
    saved_path = list(sys.path)
    try:
        with _hooks_module():
            exec(compile(text, str(SPEC), "exec"), namespace)  # our own build file
    finally:
        sys.path[:] = saved_path
    assert "Analysis" in captured, "build.spec no longer calls Analysis(...)"
    return captured


def run_spec(text: str, workpath: Path) -> dict[str, Any]:
    """Execute build.spec's text; return the keyword arguments it passes to ``Analysis``."""
    return run_spec_steps(text, workpath)["Analysis"][0]


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
        "ghl_desktop/sandbox/phones.html",  # the sandbox's phone page
        "resources/ghl-desktop.png",
        "resources/ghl-desktop.ico",
        "resources/ghl-desktop.icns",
        "resources/linux/install.sh",
        "resources/linux/ghl-desktop.desktop",
        "resources/ghl-desktop.svg",
        "resources/ghl-desktop.desktop",
    ):
        assert path in wanted, path
    assert any(p.startswith("ghl_desktop/adapters/storage/migrations/versions/0") for p in wanted)
    for package in THIRD_PARTY_DATA:
        assert any(p.startswith(f"{package}/") and p.endswith((".json", ".png")) for p in wanted), package


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
        ('*collect_data_files("ghl_desktop", include_py_files=False),', "ghl_desktop/sandbox/phones.html"),
        ('*collect_data_files("openapi_schema_validator"),', "openapi_schema_validator/schemas/"),
        ('*collect_data_files("desktop_notifier"),', "desktop_notifier/resources/python.png"),
    ],
)
def test_the_check_fails_when_an_entry_is_removed(needle: str, expected_missing: str, tmp_path: Path) -> None:
    """The coverage check can fail: the spec minus one of its data entries leaves files out."""
    text = SPEC.read_text("utf-8")
    assert needle in text, f"build.spec changed shape; update this test ({needle!r} not found)"
    missing = missing_from(run_spec(text.replace(needle, "", 1), tmp_path))
    assert any(expected_missing in path for path in missing), missing


# --- files named in the code ---------------------------------------------------------------------

#: file names in the code that the app writes at run time (in the data dir), not files it ships
WRITTEN_AT_RUN_TIME = {"settings.json", "state.json", "whatsapp-network.json", "setup.json", "ui-state.json"}
DATA_SUFFIXES = ("html", "json", "png", "svg", "ico", "icns", "pem", "css", "qss", "js", "txt", "mgc", "ini",
                 "mako", "gif", "wav", "ogg", "ttf", "otf", "desktop")


def file_names_in_code() -> dict[str, str]:
    """Every string literal in ghl_desktop/ that is a data file name (``"phones.html"``,
    ``"icons/tray-warning.png"``): name -> first module naming it."""
    pattern = re.compile(rf"^[\w./-]+\.({'|'.join(DATA_SUFFIXES)})$")
    found: dict[str, str] = {}
    for source in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value):
                found.setdefault(node.value, source.relative_to(REPO).as_posix())
    return found


def test_every_data_file_the_code_names_is_in_the_bundle(analysis: dict[str, Any]) -> None:
    """A file the code opens by name (a tray icon, a page) must exist in the tree and in the bundle:
    catches a file kept outside ghl_desktop/ and resources/, or a name with no file behind it."""
    names = file_names_in_code()
    assert "phones.html" in names and "ghl-desktop.png" in names  # the scan finds what it should
    covered = bundled_paths(analysis["datas"])
    missing = sorted(
        f"{name} (named in {module})"
        for name, module in names.items()
        if Path(name).name not in WRITTEN_AT_RUN_TIME
        and not any(path == name or path.endswith("/" + name) for path in covered)
    )
    # ship each under ghl_desktop/ or resources/, or list it in WRITTEN_AT_RUN_TIME if the app writes it
    assert missing == []


# --- per-OS packaging ----------------------------------------------------------------------------

#: Qt module families the bundle must leave out (the issue's list)
UNUSED_QT = ("QtWebEngine", "QtQml", "QtQuick", "QtMultimedia", "QtPdf", "Qt3D")


def test_the_unused_qt_modules_are_excluded(analysis: dict[str, Any]) -> None:
    excluded = set(analysis["excludes"])
    for family in UNUSED_QT:
        assert any(name.startswith(f"PySide6.{family}") for name in excluded), family
    assert {"PySide6.QtWebEngineCore", "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtMultimedia",
            "PySide6.QtPdf", "PySide6.Qt3DCore"} <= excluded
    assert not {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtSvg"} & excluded


def test_macos_builds_an_app_with_the_notification_keys(tmp_path: Path) -> None:
    steps = run_spec_steps(SPEC.read_text("utf-8"), tmp_path, platform="darwin")
    (bundle,) = steps["BUNDLE"]
    assert bundle["name"] == "ghl-desktop.app"
    plist = bundle["info_plist"]
    assert plist["CFBundleIdentifier"] == bundle["bundle_identifier"]
    assert "." in plist["CFBundleIdentifier"]
    for key in ("CFBundleName", "CFBundleShortVersionString", "CFBundleVersion", "NSHighResolutionCapable",
                "NSUserNotificationAlertStyle"):
        assert key in plist, key
    assert Path(bundle["icon"]).suffix == ".icns" and Path(bundle["icon"]).is_file()
    (exe,) = steps["EXE"]
    assert exe["console"] is False and exe["icon"] == bundle["icon"]


def test_windows_builds_a_windowed_exe_and_a_console_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mingw = tmp_path / "mingw64"  # stands in for MSYS2's mingw-w64-x86_64-file
    (mingw / "bin").mkdir(parents=True)
    (mingw / "bin" / "libmagic-1.dll").write_bytes(b"MZ")
    (mingw / "share" / "misc").mkdir(parents=True)
    (mingw / "share" / "misc" / "magic.mgc").write_bytes(b"mgc")
    monkeypatch.setenv("GHL_MSYS2_MINGW", str(mingw))
    steps = run_spec_steps(SPEC.read_text("utf-8"), tmp_path, platform="win32")
    # python-magic finds no libmagic on Windows unless the bundle brings it (and puts itself on PATH)
    (analysis,) = steps["Analysis"]
    assert (str(mingw / "bin" / "libmagic-1.dll"), ".") in analysis["binaries"]
    (hook,) = analysis["runtime_hooks"]
    assert "os.environ['PATH'] = sys._MEIPASS" in Path(hook).read_text("utf-8")
    assert "BUNDLE" not in steps
    exes = {exe["name"]: exe for exe in steps["EXE"]}
    assert set(exes) == {"ghl-desktop", "ghl-desktop-console"}
    assert exes["ghl-desktop"]["console"] is False  # double-click: no console window
    assert exes["ghl-desktop-console"]["console"] is True  # doctor, headless, --self-test print
    for exe in exes.values():
        assert Path(exe["icon"]).suffix == ".ico" and Path(exe["icon"]).is_file()
    (collect,) = steps["COLLECT"]
    assert len([arg for arg in collect["args"] if type(arg).__name__ == "EXE"]) == 2  # one folder, both exes


def test_linux_packs_the_folder_with_its_launchers(tmp_path: Path) -> None:
    """The spec's post-build step, on a stand-in of the built folder: the tar.gz users download."""
    dist = tmp_path / "dist"
    folder = dist / "ghl-desktop"
    (folder / "_internal" / "resources").mkdir(parents=True)
    (folder / "ghl-desktop").write_text("#!/bin/sh\necho started\n")
    (folder / "ghl-desktop").chmod(0o755)
    for name in ("ghl-desktop.png", "ghl-desktop.desktop"):
        shutil.copy2(REPO / "resources" / name, folder / "_internal" / "resources" / name)
    steps = run_spec_steps(SPEC.read_text("utf-8"), tmp_path / "work", platform="linux", distpath=dist)
    (exe,) = steps["EXE"]
    assert exe["console"] is True and exe["icon"] is None
    from ghl_desktop import __version__

    (archive,) = dist.glob(f"ghl-desktop-{__version__}-linux-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert {"ghl-desktop/ghl-desktop", "ghl-desktop/install.sh", "ghl-desktop/ghl-desktop.desktop",
                "ghl-desktop/_internal/resources/ghl-desktop.png"} <= set(members)
        assert members["ghl-desktop/install.sh"].mode & 0o111
        tar.extractall(tmp_path / "unpacked", filter="data")

    # install.sh puts a menu entry pointing at the unpacked folder, and --remove takes it away
    unpacked = tmp_path / "unpacked" / "ghl-desktop"
    share = tmp_path / "share"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(share)}
    subprocess.run(["sh", str(unpacked / "install.sh")], env=env, check=True, capture_output=True)
    entry = (share / "applications" / "ghl-desktop.desktop").read_text("utf-8")
    assert f'Exec="{unpacked}/ghl-desktop"' in entry.splitlines()
    assert "Icon=ghl-desktop" in entry.splitlines()
    assert (share / "icons" / "hicolor" / "256x256" / "apps" / "ghl-desktop.png").is_file()
    subprocess.run(["sh", str(unpacked / "install.sh"), "--remove"], env=env, check=True, capture_output=True)
    assert not (share / "applications" / "ghl-desktop.desktop").exists()
    # the folder launcher starts the exe next to the .desktop file, wherever the folder is
    launcher = (unpacked / "ghl-desktop.desktop").read_text("utf-8").splitlines()
    exec_line = next(line for line in launcher if line.startswith("Exec="))[len("Exec="):]
    command = exec_line.replace("%k", shlex.quote(str(unpacked / "ghl-desktop.desktop")))
    started = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, check=True)
    assert started.stdout == "started\n"


def test_windows_and_macos_icons_are_made_from_the_png(tmp_path: Path) -> None:
    """scripts/make_icons.py (the spec runs it when an icon is missing) writes valid .ico/.icns."""
    from PIL import Image

    spec = importlib.util.spec_from_file_location("make_icons_under_test", REPO / "scripts" / "make_icons.py")
    assert spec is not None and spec.loader is not None
    make_icons = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_icons)  # a private copy: its output paths can be pointed elsewhere
    make_icons.ICO, make_icons.ICNS = tmp_path / "a.ico", tmp_path / "a.icns"
    assert set(make_icons.make_icons()) == {tmp_path / "a.ico", tmp_path / "a.icns"}
    with Image.open(tmp_path / "a.ico") as ico:
        assert ico.format == "ICO" and (256, 256) in ico.info["sizes"] and (16, 16) in ico.info["sizes"]
    with Image.open(tmp_path / "a.icns") as icns:
        assert icns.format == "ICNS"
