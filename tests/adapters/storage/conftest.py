"""The storage contract suite runs every test on both backends: a temp SQLite file and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ghl_desktop.adapters.storage import Database, open_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(backend_url: str) -> Iterator[Database]:
    """A freshly migrated, empty database on the backend under test."""
    database = open_database(backend_url, migrate=True)
    try:
        yield database
    finally:
        database.close()
