"""``ghl-desktop headless --sandbox`` as a child process, for the tests that must kill it for real.

Why a helper: the headless tests and the crash test start, stop, SIGKILL and restart the same data
dir many times and read the child's stdout (logs included) for the ``sandbox: URL`` and ``ready``
lines. A reader thread drains stdout continuously (a full pipe would stall the child) and keeps
every line, also in ``<tmp>/headless-N.log`` for a post-mortem when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"


def headless_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: its own data dir, the vault passphrase (no keyring in CI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GHL_", "QT_"))}
    env.update({
        "GHL_DESKTOP_HOME": str(home),
        "GHL_DESKTOP_VAULT_PASSPHRASE": PASSPHRASE,
        "PYTHONUNBUFFERED": "1",
        # no desktop keyring for the child: the encrypted vault is used (what a server would do)
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    })
    env.update(extra or {})
    return env


class HeadlessProcess:
    """One run of the headless bridge. ``start()`` → ``wait_ready()`` → ``kill()`` / ``terminate()``."""

    def __init__(self, home: Path, log_dir: Path, *, env: Mapping[str, str] | None = None, run: int = 0) -> None:
        self.home = home
        self.log_path = log_dir / f"headless-{run}.log"
        self._env = headless_env(home, env)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._eof = False

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> HeadlessProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ghl_desktop", "headless", "--sandbox"],
            cwd=REPO, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name=f"headless-{self._proc.pid}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        # the with blocks close the pipe at EOF (an unclosed pipe is a ResourceWarning, an error in the suite)
        with open(self.log_path, "w", encoding="utf-8") as log, self._proc.stdout:
            for line in self._proc.stdout:
                log.write(line)
                log.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, match: str, timeout: float, *, prefix: bool = False) -> str:
        """The first stdout line equal to ``match`` (or starting with it); AssertionError on exit/timeout."""
        def found() -> str | None:
            return next((line for line in self.lines if (line.startswith(match) if prefix else line == match)),
                        None)

        with self._cond:
            ok = self._cond.wait_for(lambda: found() is not None or self._eof, timeout)
            line = found()
        if line is None:
            tail = "\n".join(self.lines[-30:])
            why = "exited" if ok else f"did not print it within {timeout:.0f} s"
            raise AssertionError(f"headless {why} before {match!r}; last output:\n{tail}")
        return line

    def wait_ready(self, timeout: float = 90.0) -> str:
        """Waits for ``sandbox: URL`` then ``ready``; returns the URL."""
        url = self.wait_line("sandbox: ", timeout, prefix=True).split(" ", 1)[1].strip()
        self.wait_line("ready", timeout)
        assert self.lines.index(next(x for x in self.lines if x.startswith("sandbox: "))) < self.lines.index("ready")
        return url

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the child."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(30)
        self._join()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        code = self._proc.wait(timeout)
        self._join()
        return code

    def stop_quietly(self) -> None:
        """Cleanup for a failed test: whatever state the child is in, it is gone afterwards."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(30)
        self._join()

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(10)
