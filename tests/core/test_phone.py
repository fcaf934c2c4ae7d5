"""One phone normaliser (issue 11 item 13): every phone check in the product uses core.convert's E.164
bounds (at most 15 digits) and, where text is parsed, its one ``normalize_phone``."""

from __future__ import annotations

import pytest

from ghl_desktop.adapters.ghl.client import InvalidPhoneNumber
from ghl_desktop.adapters.ghl.client import normalize_phone as client_normalize
from ghl_desktop.core import wa_normalize
from ghl_desktop.core.convert import (
    E164_MAX_DIGITS,
    InvalidPhone,
    e164_from_digits,
    normalize_phone,
    phone_from_jid,
)
from ghl_desktop.sandbox.runtime import normalize_phone as sandbox_normalize
from ghl_desktop.sandbox.whatsapp.model import normalize_phone as network_normalize

FIFTEEN = "491701234567890"
SIXTEEN = FIFTEEN + "1"


def test_e164_allows_at_most_15_digits() -> None:
    assert E164_MAX_DIGITS == 15
    assert e164_from_digits(FIFTEEN) == "+" + FIFTEEN
    assert e164_from_digits("+" + FIFTEEN) == "+" + FIFTEEN
    assert e164_from_digits(SIXTEEN) is None
    assert e164_from_digits("1234") is None and e164_from_digits("12a45") is None
    assert e164_from_digits("١٢٣٤٥٦٧٨") is None  # non-ASCII digits are not a phone number


def test_every_digit_level_check_agrees_on_the_bounds() -> None:
    for check in (lambda d: phone_from_jid(f"{d}@s.whatsapp.net"), wa_normalize._as_phone,
                  lambda d: _or_none(network_normalize, d)):
        assert check(FIFTEEN) == "+" + FIFTEEN, check
        assert check(SIXTEEN) is None, check  # 16 digits: refused everywhere (one place said 16 before)


def _or_none(fn, value):  # type: ignore[no-untyped-def]
    try:
        return fn(value)
    except ValueError:
        return None


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("14155552671", None, "+14155552671"),  # a JID's user part: the full number without '+'
        ("14155552671@s.whatsapp.net", None, "+14155552671"),
        ("0044 20 7946 0958", None, "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_the_one_normaliser_and_its_users_agree(raw: str, region: str | None, expected: str) -> None:
    assert normalize_phone(raw, region) == expected
    assert client_normalize(raw, region) == expected
    if region or raw.startswith(("+", "00")):  # the sandbox reads bare digits as national, like HighLevel
        assert sandbox_normalize(raw, region or "US") == expected


@pytest.mark.parametrize("raw", ["", "hello", "+1 555", "+999 123", "+" + SIXTEEN, "123@lid"])
def test_what_is_not_a_phone_number_is_refused_by_all(raw: str) -> None:
    with pytest.raises(InvalidPhone):
        normalize_phone(raw)
    with pytest.raises(InvalidPhoneNumber):
        client_normalize(raw)
    assert sandbox_normalize(raw, "US") is None
