from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.rules.numbers import (
    format_national,
    is_internal_extension,
    is_withheld,
    number_kind,
    timezones_for,
    to_e164,
)

# (region of the PBX, caller ID as the trunk sent it, E.164 we should text)
CALLER_IDS = [
    ("US", "+12015550123", "+12015550123"),
    ("US", "2015550123", "+12015550123"),
    ("US", "12015550123", "+12015550123"),
    ("US", "(201) 555-0123", "+12015550123"),
    ("US", "201.555.0123", "+12015550123"),
    ("US", "011 44 20 7946 0958", "+442079460958"),
    ("US", "011447400123456", "+447400123456"),
    ("US", "00447400123456", "+447400123456"),  # a European-style prefix on a US trunk
    ("US", "442079460958", "+442079460958"),  # international without "+"
    ("US", "sip:+12015550123@trunk.example;user=phone", "+12015550123"),
    ("US", "tel:+1-201-555-0123", "+12015550123"),
    ("GB", "020 7946 0958", "+442079460958"),
    ("GB", "07400 123456", "+447400123456"),
    ("GB", "+44 (0)20 7946 0958", "+442079460958"),
    ("GB", "0044 7400 123456", "+447400123456"),
    ("GB", "001 201 555 0123", "+12015550123"),
    ("DE", "030 123456", "+4930123456"),
    ("DE", "0151 23456789", "+4915123456789"),
    ("DE", "0049 30 123456", "+4930123456"),
    ("DE", "+49-151-23456789", "+4915123456789"),
    ("FR", "06 12 34 56 78", "+33612345678"),
    ("FR", "01 23 45 67 89", "+33123456789"),
    ("FR", "0033 6 12 34 56 78", "+33612345678"),
    ("AU", "0412 345 678", "+61412345678"),
    ("AU", "(02) 1234 5678", "+61212345678"),
    ("AU", "0011 44 20 7946 0958", "+442079460958"),
    ("AU", "+61 412 345 678", "+61412345678"),
]


@pytest.mark.parametrize(("region", "raw", "expected"), CALLER_IDS)
def test_caller_ids_normalise_to_e164(region: str, raw: str, expected: str) -> None:
    assert to_e164(raw, region) == expected


@pytest.mark.parametrize(
    ("region", "raw"),
    [
        ("US", "555"),
        ("US", "123"),
        ("US", "0000000000"),
        ("US", "anonymous"),
        ("GB", "020 7946"),  # too short
        ("DE", "+49 1"),
        ("FR", "+33 99 99 99 99 99 99"),
        ("AU", "not a number"),
        ("US", ""),
    ],
)
def test_things_that_are_not_numbers_give_none(region: str, raw: str) -> None:
    assert to_e164(raw, region) is None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "anonymous",
        "Anonymous",
        "ANONYMOUS",
        "<unknown>",
        "unknown",
        "Restricted",
        "private",
        "Unavailable",
        "withheld",
        "0000000000",
        "0",
        "+000",
        "sip:anonymous@anonymous.invalid",
        "out_of_area",
        "Private Number",
    ],
)
def test_withheld_caller_ids(raw: str | None) -> None:
    assert is_withheld(raw)


@pytest.mark.parametrize("raw", ["+12015550123", "2015550123", "100", "020 7946 0958"])
def test_presented_numbers_are_not_withheld(raw: str) -> None:
    assert not is_withheld(raw)


@given(st.text())
def test_any_caller_id_is_handled_without_error(raw: str) -> None:
    result = to_e164(raw, "US")
    assert result is None or (result.startswith("+") and result[1:].isdigit())
    if is_withheld(raw):
        assert result is None


@given(
    st.from_regex(r"\+?[0-9 ()\-]{0,20}", fullmatch=True),
    st.sampled_from(["US", "GB", "DE", "FR", "AU"]),
)
def test_normalising_twice_changes_nothing(raw: str, region: str) -> None:
    first = to_e164(raw, region)
    if first is not None:
        assert to_e164(first, region) == first
        assert to_e164(first, "ZZ") == first


@pytest.mark.parametrize(
    ("e164", "kind"),
    [
        ("+12015550123", "fixed_line_or_mobile"),  # the US plan cannot tell
        ("+18005550123", "toll_free"),
        ("+442079460958", "fixed_line"),
        ("+447400123456", "mobile"),
        ("+4930123456", "fixed_line"),
        ("+4915123456789", "mobile"),
        ("+33123456789", "fixed_line"),
        ("+33612345678", "mobile"),
        ("+61212345678", "fixed_line"),
        ("+61412345678", "mobile"),
        ("not a number", "unknown"),
    ],
)
def test_number_kind(e164: str, kind: str) -> None:
    assert number_kind(e164) == kind


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("100", "US", True),
        ("2001", "GB", True),
        ("42", "DE", True),
        ("123456", "FR", True),
        ("2015550123", "US", False),
        ("+12015550123", "US", False),
        ("030123456", "DE", False),
        ("1234567", "AU", False),  # too long for an extension
        ("*97", "US", False),
        (None, "US", False),
    ],
)
def test_internal_extensions(raw: str | None, region: str, expected: bool) -> None:
    assert is_internal_extension(raw, region) is expected


def test_time_zones_come_from_the_prefix() -> None:
    assert timezones_for("+12125550123") == ["America/New_York"]
    assert timezones_for("+442079460958") == ["Europe/London"]
    assert "America/Los_Angeles" in timezones_for("+18005550123")  # toll-free: anywhere
    assert timezones_for("junk") == []


def test_dialled_numbers_are_shown_the_national_way() -> None:
    assert format_national("+442079460958", "GB") == "020 7946 0958"
    assert format_national("2015550123", "US") == "(201) 555-0123"
    assert format_national("+442079460958", "US") == "+44 20 7946 0958"
    assert format_national("s", "US") is None
    assert format_national("100", "US") is None
