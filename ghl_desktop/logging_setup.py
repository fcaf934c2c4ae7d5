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

Configure logging BEFORE importing neonize: its import calls ``logging.basicConfig(INFO)``, which
is a no-op once the root logger has handlers.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

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
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / LOG_FILE_NAME
    formatter = logging.Formatter(_FORMAT)
    handlers: list[logging.Handler] = []

    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    try:
        os.chmod(log_file, 0o600)  # logs name locations and phone numbers: keep them private
    except OSError:
        pass
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


__all__ = ["REDACTED", "LoggingSetup", "RedactingFilter", "configure_logging"]
