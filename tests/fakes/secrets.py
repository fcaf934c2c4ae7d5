"""An in-memory SecretStore (implements core.ports.SecretStore) for unit tests."""

from __future__ import annotations

from collections.abc import Callable


def _unwatched(what: str) -> None:
    return None


class MemorySecretStore:
    description = "in-memory test store"
    #: called with what is being done on every call; the suite's storage-on-the-loop check sets it
    #: (tests/fixtures/storage_on_loop.py): a keyring call is a D-Bus round trip, never on the loop
    check: Callable[[str], None] = staticmethod(_unwatched)

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    def get(self, key: str) -> str | None:
        self.check("secret store: get")
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.check("secret store: set")
        self.writes += 1
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.check("secret store: delete")
        self.values.pop(key, None)
