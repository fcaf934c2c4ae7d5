"""Logging: a rotating file in the platform log dir plus the console, both behind a redaction filter.

Why a filter on the *handlers* (not on loggers): a logger filter only sees records created by that
logger, while third-party loggers (httpx, aiohttp, whatsmeow via neonize) propagate to the root
handlers. Every record that reaches a file or the console passes :class:`RedactingFilter`, which
formats the message with its args, scrubs it, and scrubs the exception and stack text too.

What is scrubbed: ``Bearer <token>``; JWT-looking strings (HighLevel access and refresh tokens are
JWTs); ``access_token=``/``refresh_token=``/``client_secret=``/``code=``/``password=`` values in
query strings and form bodies; the same keys as JSON or Python-dict entries; and any exact secret
value registered with :meth:`RedactingFilter.add_secret` (the configured client secret is
registered at start-up).

Policy for our own code (reviewers hold us to it): message bodies are never logged at INFO or above
— log ids, kinds, sizes and statuses; a body may appear only at DEBUG, which is off by default.

Log injection (issue 10.9): text an outsider controls (``/oauth/callback?error=`` through the relay, a
webhook's ``type``) may carry CR/LF or terminal escapes. :class:`SafeFormatter`, on every handler,
escapes control characters in the message (``\r`` → ``\\r``, ESC → ``\\x1b``, U+2028 → ``\\u2028``), so
one record is always one line, and indents every line of a traceback or stack with ``  | `` so nothing
after the first line can pass for a record of its own.

File modes (issue 10.7): the log dir is 0700 and every log file, including each rotated backup, is
created 0600 (:class:`PrivateRotatingFileHandler` opens files with that mode, whatever the umask).

Configure logging BEFORE importing neonize: its import calls ``logging.basicConfig(INFO)``, which
is a no-op once the root logger has handlers.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ghl_desktop.config import Settings

LOG_FILE_NAME = "ghl-desktop.log"
REDACTED = "[REDACTED]"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_SECRET_KEYS = r"access_token|refresh_token|id_token|client_secret|code|password|passphrase|api_key|apikey"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token>  (any token shape)
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    # JWTs (HighLevel access/refresh tokens, id tokens): three base64url parts, the first "eyJ"
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # "key": "value"  /  'key': 'value'  (JSON bodies, Python dict reprs)
    (
        re.compile(r"""(?i)(["'](?:""" + _SECRET_KEYS + r""")["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2"""),
        r"\1\2" + REDACTED + r"\2",
    ),
    # key=value in query strings, form bodies and "key=value" prose
    (re.compile(r"(?i)\b(" + _SECRET_KEYS + r")=([^&\s\"',;)\]}]+)"), r"\1=" + REDACTED),
)


#: C0 controls, DEL, C1 controls and the Unicode line/paragraph separators, each to a visible escape
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})
_CONTROL_LINES = {c: v for c, v in _CONTROL.items() if c not in (0x0A, 0x09)}


def escape_control(text: str) -> str:
    """``text`` on one line: every control character written as an escape."""
    return text.translate(_CONTROL)


def _indent_block(text: str) -> str:
    lines = text.translate(_CONTROL_LINES).split("\n")
    return "\n".join("  | " + line for line in lines)


class SafeFormatter(logging.Formatter):
    """One record, one line: control characters in the message are escaped; exception and stack text
    keep their lines but each is indented with ``  | `` (and its other control characters escaped)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indent_block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent_block(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        # exc_text may have been rendered (and redacted) by RedactingFilter without our indentation
        if record.exc_text and not record.exc_text.startswith("  | "):
            record.exc_text = _indent_block(record.exc_text)
        return super().format(record)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Every file it opens — the log and each rotated backup — is created readable by the owner only."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):
            os.chmod(self.baseFilename, 0o600)  # a file from an older version (0644)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def rotate(self, source: str, dest: str) -> None:
        super().rotate(source, dest)
        with contextlib.suppress(OSError):
            os.chmod(dest, 0o600)


class RedactingFilter(logging.Filter):
    """Scrubs tokens, secrets and OAuth codes out of every record a handler emits.

    The record is rewritten in place (message merged with its args, ``args`` cleared, exception text
    pre-rendered and scrubbed), so every handler after it, and any formatter, sees only clean text."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add_secret(self, value: str | None) -> None:
        """Always redact this exact value (the client secret, a token read from the store)."""
        if value and len(value) >= 6:  # shorter strings would blank out ordinary words
            self._secrets.add(value)

    def redact(self, text: str) -> str:
        for value in sorted(self._secrets, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format: keep what we can, scrubbed
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


@dataclass
class LoggingSetup:
    """What :func:`configure_logging` installed; ``redactor`` takes more secrets at run time."""

    log_file: Path
    redactor: RedactingFilter
    handlers: list[logging.Handler] = field(default_factory=list)

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        self.handlers.clear()


def configure_logging(
    settings: Settings,
    console: bool | TextIO = True,
    *,
    max_bytes: int = 5 * 1024 * 1024,
    backup_count: int = 5,
) -> LoggingSetup:
    """Install the rotating file handler (+ console) on the root logger, replacing earlier ones.

    Calling it again (tests, a vault retry) replaces the handlers it installed before instead of
    stacking duplicates."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ghl_desktop", False):
            root.removeHandler(handler)
            handler.close()

    redactor = RedactingFilter()
    redactor.add_secret(settings.client_secret)

    log_dir = settings.log_dir
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(log_dir, 0o700)  # logs name locations and phone numbers: keep them private
    log_file = log_dir / LOG_FILE_NAME
    formatter = SafeFormatter(_FORMAT)
    handlers: list[logging.Handler] = []

    file_handler = PrivateRotatingFileHandler(
        log_file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    for backup in range(1, backup_count + 1):  # backups rotated by an older version
        with contextlib.suppress(OSError):
            os.chmod(f"{log_file}.{backup}", 0o600)
    handlers.append(file_handler)
    if console:
        # True: stderr (the window's console); a stream: that stream (headless logs to stdout)
        handlers.append(logging.StreamHandler(sys.stderr if console is True else console))

    for handler in handlers:
        handler.addFilter(redactor)
        handler.setFormatter(formatter)
        handler._ghl_desktop = True  # type: ignore[attr-defined]
        root.addHandler(handler)

    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    # neonize forwards whatsmeow's Go logs at the level of this logger when a client connects;
    # NOTSET would forward DEBUG noise from every socket.
    for noisy in ("neonize.utils.log", "whatsmeow", "Whatsmeow", "httpx", "httpcore", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return LoggingSetup(log_file=log_file, redactor=redactor, handlers=handlers)


__all__ = [
    "REDACTED",
    "LoggingSetup",
    "PrivateRotatingFileHandler",
    "RedactingFilter",
    "SafeFormatter",
    "configure_logging",
    "escape_control",
]
