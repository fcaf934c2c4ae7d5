"""An in-memory SecretStore (implements core.ports.SecretStore) for unit tests."""

from __future__ import annotations


class MemorySecretStore:
    description = "in-memory test store"

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.writes += 1
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)
