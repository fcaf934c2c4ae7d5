"""Which storage work may wait its turn (issue 12): one writer thread serves the whole app on SQLite, and
a WhatsApp message is acknowledged only once it is stored, so the intake's calls must not queue behind
the job runner's. The runner runs its jobs and bookkeeping with ``BACKGROUND`` set; the storage executor
(adapters/storage/offloop.py) takes every other waiting call first. Only the order of waiting calls
changes: each call still runs alone and whole, and the runner's run as soon as no other one waits."""

from __future__ import annotations

from contextvars import ContextVar

#: True in the job runner's tasks (set by services/jobs.py); read by the storage executor
BACKGROUND: ContextVar[bool] = ContextVar("ghl_storage_background", default=False)
