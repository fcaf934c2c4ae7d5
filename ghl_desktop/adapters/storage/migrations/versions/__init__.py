"""Numbered, hand-written migrations (``NNNN_what.py``); alembic ignores this file."""
