from __future__ import annotations

import pytest

from tests.webhooks.signing import SigningKeys


@pytest.fixture(scope="session")
def signing_keys() -> SigningKeys:
    return SigningKeys()
