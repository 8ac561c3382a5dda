from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.calls.policy import (
    CallerHistory,
    Rules,
    Send,
    Skip,
    decide,
    describe_opening,
    merge_fields,
    variant_for,
)
from agent.calls.tracker import FinishedCall
from agent.rules.numbers import to_e164
from agent.rules.settings import SettingError

pytestmark = pytest.mark.clock  # make test-clock runs it at awkward instants too

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")

SETTINGS = {
    "business.name": "Acme Plumbing",
    "business.timezone": "Europe/London",
    "hours.weekly": "mon-fri 08:00-12:00,13:00-17:00; sat 09:00-12:00",
    "hours.holidays": ["2026-12-25"],
    "textback.delay": "15s",
}
RULES = Rules.from_settings(SETTINGS, region="GB")
MOBILE = "+447400123456"
LANDLINE = "+442079460958"
NO_HISTORY = CallerHistory()


def london(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LONDON)


def missed_call(ended: dt.datetime, **changes: object) -> FinishedCall:
    call = FinishedCall(
        linkedid="1700000000.1",
        caller="07400 123456",
        caller_name="Maria Garcia",
        did="02079460000",
        direction="inbound",
        missed=True,
        reason="noanswer",
        voicemail_left=False,
        answered_by=None,
        ring_seconds=20.0,
        started_at=ended.timestamp() - 25,
        ended_at=ended.timestamp(),
        trunk_endpoint="PJSIP/trunk",
    )
    return dataclasses.replace(call, **changes)


def decide_for(call: FinishedCall, *, history: CallerHistory = NO_HISTORY, rules: Rules = RULES,
               now: dt.datetime | None = None) -> Send | Skip:  # fmt: skip
    number = to_e164(call.caller, rules.region) if call.caller else None
    when = now or dt.datetime.fromtimestamp(call.ended_at, dt.UTC) + dt.timedelta(seconds=1)
    return decide(call, number, history, rules, when)


MONDAY_10 = london(2026, 3, 2, 10, 0)  # 2 March 2026 is a Monday


# ---------------------------------------------------------------- templates


def test_weekday_morning_call_gets_the_business_hours_text() -> None:
    decision = decide_for(missed_call(MONDAY_10))
    assert isinstance(decision, Send)
    assert decision.template_key == "templates.business_hours"
    assert decision.body.startswith("Hi Maria, thanks for calling Acme Plumbing.")
    assert decision.send_at == MONDAY_10 + dt.timedelta(seconds=15)
    assert (decision.encoding, decision.segments) == ("GSM-7", 1)


def test_lunch_break_call_gets_the_after_hours_text_with_the_reopening() -> None:
    decision = decide_for(missed_call(london(2026, 3, 2, 12, 30)))
    assert isinstance(decision, Send)
    assert decision.template_key == "templates.after_hours"
    assert "We're closed now. We reopen today at 13:00." in decision.body


def test_evening_call_hears_about_tomorrow_morning() -> None:
    decision = decide_for(missed_call(london(2026, 3, 3, 19, 0)))
    assert isinstance(decision, Send)
    assert "We reopen tomorrow at 8:00." in decision.body


def test_saturday_afternoon_call_hears_about_monday() -> None:
    decision = decide_for(missed_call(london(2026, 3, 7, 14, 0)))
    assert isinstance(decision, Send)
    assert "We reopen Monday at 8:00." in decision.body


def test_christmas_call_gets_the_after_hours_text() -> None:
    decision = decide_for(missed_call(london(2026, 12, 25, 10, 0)))
    assert isinstance(decision, Send)
    assert decision.template_key == "templates.after_hours"
    assert "We reopen tomorrow at 9:00." in decision.body  # Saturday hours


def test_voicemail_gets_the_voicemail_text_whatever_the_hour() -> None:
    for ended in (MONDAY_10, london(2026, 3, 3, 19, 0)):
        decision = decide_for(missed_call(ended, voicemail_left=True, reason="voicemail"))
        assert isinstance(decision, Send)
        assert decision.template_key == "templates.voicemail"
        assert "leaving a message" in decision.body


def test_the_delay_decides_which_text_is_true_when_read() -> None:
    rules = Rules.from_settings({**SETTINGS, "textback.delay": "2m"}, region="GB")
    decision = decide_for(missed_call(london(2026, 3, 2, 16, 59)), rules=rules)
    assert isinstance(decision, Send)
    assert decision.send_at == london(2026, 3, 2, 17, 1)
    assert decision.template_key == "templates.after_hours"  # closed when it arrives


def test_a_call_learnt_late_is_judged_when_the_text_goes_out() -> None:
    call = missed_call(london(2026, 3, 2, 16, 0))
    decision = decide_for(call, now=london(2026, 3, 2, 18, 0))  # after an AMI outage
    assert isinstance(decision, Send)
    assert decision.template_key == "templates.after_hours"
    assert decision.send_at == london(2026, 3, 2, 16, 0, 15)


def test_unknown_caller_name_reads_hi_there() -> None:
    for name in (None, "WIRELESS CALLER", "DALLAS TX", "07400123456"):
        decision = decide_for(missed_call(MONDAY_10, caller_name=name))
        assert isinstance(decision, Send)
        assert decision.body.startswith("Hi there, thanks for calling Acme Plumbing.")


def test_booking_link_appears_only_when_set() -> None:
    rules = Rules.from_settings(
        {**SETTINGS, "business.booking_link": "https://acme.example/book"}, region="GB"
    )
    with_link = decide_for(missed_call(MONDAY_10), rules=rules)
    without = decide_for(missed_call(MONDAY_10))
    assert isinstance(with_link, Send) and isinstance(without, Send)
    assert with_link.body.endswith("Book: https://acme.example/book")
    assert "Book" not in without.body


def test_emoji_in_a_template_switches_to_ucs2() -> None:
    rules = Rules.from_settings(
        {**SETTINGS,
         "templates.business_hours": "{business}: sorry we missed you 🙏 Call back any time!"},
        region="GB",
    )
    decision = decide_for(missed_call(MONDAY_10), rules=rules)
    assert isinstance(decision, Send)
    assert (decision.encoding, decision.segments) == ("UCS-2", 1)


# ----------------------------------------------------------------- A/B tests

B_BUSINESS_HOURS = "Hi {first_name}, {business} here: reply with a good time and we'll call you."
B_AFTER_HOURS = "Hi {first_name}, {business} is closed; we reopen {next_open}. Reply here."
B_VOICEMAIL = "Hi {first_name}, {business} got your voicemail; we'll ring you back soon."


def _callers(count: int) -> list[str]:
    """UK mobile numbers as callers dial them, all different."""
    return [f"07400 1{n:05d}" for n in range(count)]


def test_about_half_of_many_callers_get_the_b_text() -> None:
    rules = Rules.from_settings(
        {**SETTINGS, "templates.business_hours_b": B_BUSINESS_HOURS}, region="GB")
    decisions = [decide_for(missed_call(MONDAY_10, caller=caller), rules=rules)
                 for caller in _callers(2000)]
    sends = [d for d in decisions if isinstance(d, Send)]
    assert len(sends) == 2000
    b = [d for d in sends if d.variant == "B"]
    a = [d for d in sends if d.variant == "A"]
    assert len(a) + len(b) == 2000
    assert 900 <= len(b) <= 1100  # a fair coin: 1000 ± 4.5 standard deviations
    assert all(d.body.startswith("Hi Maria, Acme Plumbing here: reply with a good time")
               for d in b)
    assert all(d.body.startswith("Hi Maria, thanks for calling Acme Plumbing.") for d in a)
    assert {d.template_key for d in sends} == {"templates.business_hours"}


def test_one_caller_always_gets_the_same_variant() -> None:
    settings_ab = {**SETTINGS, "templates.business_hours_b": B_BUSINESS_HOURS}
    for caller in _callers(50):
        first = decide_for(missed_call(MONDAY_10, caller=caller),
                           rules=Rules.from_settings(settings_ab, region="GB"))
        # another call a week later, judged by rules read again (a restart)
        again = decide_for(missed_call(MONDAY_10 + dt.timedelta(days=7), caller=caller,
                                       linkedid="1700000000.2"),
                           rules=Rules.from_settings(settings_ab, region="GB"))
        assert isinstance(first, Send) and isinstance(again, Send)
        assert first.variant == again.variant and first.body == again.body
    # pinned: an upgrade that changed the assignment would move callers of a running test
    assert [variant_for(n) for n in ("+447400123456", "+447400123457", "+15551234567")] == [
        "B", "A", "A"]
    # the caller's own spelling does not matter, only the E.164 number
    national = decide_for(missed_call(MONDAY_10, caller="07400 123456"),
                          rules=Rules.from_settings(settings_ab, region="GB"))
    international = decide_for(missed_call(MONDAY_10, caller="+44 7400 123456"),
                               rules=Rules.from_settings(settings_ab, region="GB"))
    assert isinstance(national, Send) and isinstance(international, Send)
    assert national.variant == international.variant == "B"


def test_without_a_b_text_there_is_no_test() -> None:
    for caller in _callers(20):
        decision = decide_for(missed_call(MONDAY_10, caller=caller))
        assert isinstance(decision, Send)
        assert decision.variant is None
        assert decision.body.startswith("Hi Maria, thanks for calling Acme Plumbing.")


def test_voicemail_and_after_hours_tests_follow_their_own_keys() -> None:
    rules = Rules.from_settings({**SETTINGS, "templates.voicemail_b": B_VOICEMAIL,
                                 "templates.after_hours_b": B_AFTER_HOURS}, region="GB")
    b_caller = "07400 123456"  # variant B (pinned above)
    open_now = decide_for(missed_call(MONDAY_10, caller=b_caller), rules=rules)
    assert isinstance(open_now, Send)
    assert open_now.variant is None  # no business-hours test is running
    assert open_now.template_key == "templates.business_hours"
    voicemail = decide_for(missed_call(MONDAY_10, caller=b_caller, voicemail_left=True,
                                       reason="voicemail"), rules=rules)
    assert isinstance(voicemail, Send)
    assert (voicemail.template_key, voicemail.variant) == ("templates.voicemail", "B")
    assert voicemail.body == "Hi Maria, Acme Plumbing got your voicemail; we'll ring you back soon."
    evening = decide_for(missed_call(london(2026, 3, 3, 19, 0), caller=b_caller), rules=rules)
    assert isinstance(evening, Send)
    assert (evening.template_key, evening.variant) == ("templates.after_hours", "B")
    assert evening.body == ("Hi Maria, Acme Plumbing is closed; we reopen tomorrow at 8:00. "
                            "Reply here.")
    a_caller = "07400 123457"  # variant A: the usual texts, but counted in the test
    evening_a = decide_for(missed_call(london(2026, 3, 3, 19, 0), caller=a_caller), rules=rules)
    assert isinstance(evening_a, Send)
    assert evening_a.variant == "A" and "We're closed now. We reopen tomorrow" in evening_a.body


def test_b_texts_are_checked_like_templates() -> None:
    with pytest.raises(SettingError, match=r"templates\.voicemail_b: unknown merge field"):
        Rules.from_settings({**SETTINGS, "templates.voicemail_b": "Hi {frist_name}"}, "GB")
    blank = Rules.from_settings({**SETTINGS, "templates.voicemail_b": "   "}, "GB")
    assert blank.template_voicemail_b == ""  # blank = no test, not an empty text


# -------------------------------------------------------------------- skips


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"missed": False, "reason": None, "answered_by": "PJSIP/desk"}, "answered"),
        ({"direction": "internal"}, "not_inbound"),
        ({"direction": "outbound"}, "not_inbound"),
        ({"caller": None}, "withheld"),
        ({"caller": "anonymous"}, "withheld"),
        ({"caller": "<unknown>"}, "withheld"),
        ({"caller": "0000000000"}, "withheld"),
        ({"caller": "201"}, "internal_extension"),
        ({"caller": "020 7946"}, "invalid_number"),
        ({"caller": "020 7946 0958"}, "fixed_line"),
    ],
)
def test_calls_that_are_not_texted(changes: dict[str, object], reason: str) -> None:
    assert decide_for(missed_call(MONDAY_10, **changes)) == Skip(reason)


def test_excluded_numbers_are_never_texted() -> None:
    rules = Rules.from_settings({**SETTINGS, "textback.exclusions": ["07400 123456"]}, "GB")
    assert decide_for(missed_call(MONDAY_10), rules=rules) == Skip("excluded")


def test_opted_out_and_undeliverable_callers_are_not_texted() -> None:
    call = missed_call(MONDAY_10)
    assert decide_for(call, history=CallerHistory(opted_out=True)) == Skip("opted_out")
    assert decide_for(call, history=CallerHistory(permanent_failure=True)) == Skip(
        "known_undeliverable"
    )


def test_landlines_are_texted_when_the_business_allows_it() -> None:
    rules = Rules.from_settings({**SETTINGS, "textback.text_fixed_lines": True}, "GB")
    assert isinstance(decide_for(missed_call(MONDAY_10, caller=LANDLINE), rules=rules), Send)


def test_us_numbers_are_texted_although_the_plan_cannot_tell_mobile_from_landline() -> None:
    rules = Rules.from_settings({**SETTINGS, "business.timezone": "America/New_York"}, "US")
    call = missed_call(dt.datetime(2026, 3, 2, 10, 0, tzinfo=NEW_YORK), caller="(201) 555-0123")
    assert isinstance(decide_for(call, rules=rules), Send)


@pytest.mark.parametrize(
    ("since", "cooldown", "texted"),
    [
        (dt.timedelta(hours=23), "24h", False),
        (dt.timedelta(hours=25), "24h", True),
        (dt.timedelta(minutes=10), "15m", False),
        (dt.timedelta(minutes=10), "0s", True),
        (dt.timedelta(seconds=-30), "24h", False),  # one already scheduled for later
    ],
)
def test_one_text_per_caller_per_cooldown(since: dt.timedelta, cooldown: str, texted: bool) -> None:
    rules = Rules.from_settings({**SETTINGS, "textback.cooldown": cooldown}, "GB")
    now = MONDAY_10 + dt.timedelta(seconds=1)
    history = CallerHistory(last_textback_at=now - since)
    decision = decide_for(missed_call(MONDAY_10), history=history, rules=rules, now=now)
    assert isinstance(decision, Send) is texted
    if not texted:
        assert decision == Skip("cooldown")


def test_skip_reasons_follow_the_documented_order() -> None:
    # Start with everything wrong, then put right one thing at a time: each
    # step must reveal the next reason in the documented order.
    call = missed_call(MONDAY_10, missed=False, direction="internal", caller="anonymous")
    history = CallerHistory(opted_out=True, permanent_failure=True, last_textback_at=MONDAY_10)
    rules = Rules.from_settings({**SETTINGS, "textback.exclusions": [LANDLINE]}, "GB")
    fixes = [
        ("answered", lambda c, h, r: (dataclasses.replace(c, missed=True), h, r)),
        ("not_inbound", lambda c, h, r: (dataclasses.replace(c, direction="inbound"), h, r)),
        ("withheld", lambda c, h, r: (dataclasses.replace(c, caller="100"), h, r)),
        ("internal_extension", lambda c, h, r: (dataclasses.replace(c, caller="020 7946"), h, r)),
        ("invalid_number", lambda c, h, r: (dataclasses.replace(c, caller=LANDLINE), h, r)),
        ("excluded", lambda c, h, r: (c, h, Rules.from_settings(SETTINGS, "GB"))),
        ("opted_out", lambda c, h, r: (c, dataclasses.replace(h, opted_out=False), r)),
        (
            "known_undeliverable",
            lambda c, h, r: (c, dataclasses.replace(h, permanent_failure=False), r),
        ),
        (
            "fixed_line",
            lambda c, h, r: (c, h, dataclasses.replace(r, text_fixed_lines=True)),
        ),
        ("cooldown", lambda c, h, r: (c, dataclasses.replace(h, last_textback_at=None), r)),
    ]
    for reason, fix in fixes:
        assert decide_for(call, history=history, rules=rules) == Skip(reason)
        call, history, rules = fix(call, history, rules)
    assert isinstance(decide_for(call, history=history, rules=rules), Send)


# ------------------------------------------------------------ merge fields


@pytest.mark.parametrize(
    ("opening", "reference", "said"),
    [
        (london(2026, 3, 2, 13, 0), london(2026, 3, 2, 12, 30), "today at 13:00"),
        (london(2026, 3, 3, 8, 0), london(2026, 3, 2, 19, 0), "tomorrow at 8:00"),
        (london(2026, 3, 3, 8, 0), london(2026, 3, 3, 0, 30), "today at 8:00"),
        (london(2026, 3, 9, 8, 0), london(2026, 3, 7, 14, 0), "Monday at 8:00"),
        (london(2027, 1, 4, 8, 30), london(2026, 12, 23, 18, 0), "on 4 January at 8:30"),
    ],
)
def test_next_opening_is_said_the_way_people_say_it(
    opening: dt.datetime, reference: dt.datetime, said: str
) -> None:
    assert describe_opening(opening, reference, RULES.schedule) == said


def test_relative_days_are_counted_in_the_business_zone() -> None:
    # 23:30 UTC on Monday is already Tuesday 00:30 in Berlin (winter).
    rules = Rules.from_settings({**SETTINGS, "business.timezone": "Europe/Berlin"}, "DE")
    opening = dt.datetime(2026, 3, 3, 7, 0, tzinfo=dt.UTC)  # Tuesday 08:00 Berlin
    reference = dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.UTC)
    assert describe_opening(opening, reference, rules.schedule) == "today at 8:00"


def test_merge_fields_for_a_call() -> None:
    fields = merge_fields(missed_call(MONDAY_10), RULES, MONDAY_10)
    assert fields == {
        "business": "Acme Plumbing",
        "caller_name": "Maria Garcia",
        "first_name": "Maria",
        "booking_link": None,
        "next_open": None,  # open now: nothing to announce
        "did": "020 7946 0000",
    }
    closed = merge_fields(missed_call(MONDAY_10, did="s"), RULES, london(2026, 3, 2, 18, 0))
    assert closed["next_open"] == "tomorrow at 8:00"
    assert closed["did"] is None


def test_always_open_business_never_announces_an_opening() -> None:
    rules = Rules.from_settings({**SETTINGS, "hours.weekly": "", "hours.holidays": []}, "GB")
    assert merge_fields(missed_call(MONDAY_10), rules, MONDAY_10)["next_open"] is None


# ------------------------------------------------------------------- rules


def test_rules_fill_in_defaults() -> None:
    rules = Rules.from_settings({}, "us")
    assert rules.region == "US"
    assert rules.business == "us"
    assert rules.delay == dt.timedelta(0)
    assert rules.cooldown == dt.timedelta(hours=24)
    assert rules.schedule.always_open
    assert not rules.text_fixed_lines


def test_rules_refuse_bad_settings() -> None:
    with pytest.raises(SettingError, match=r"hours\.weekly"):
        Rules.from_settings({"hours.weekly": "weekdays 25-26"}, "GB")


@given(
    caller=st.one_of(
        st.none(), st.text(max_size=25), st.from_regex(r"\+?[0-9 ]{1,16}", fullmatch=True)
    ),
    name=st.one_of(st.none(), st.text(max_size=60)),
    voicemail=st.booleans(),
    ended=st.datetimes(
        dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 31), timezones=st.just(dt.UTC)
    ),
)
def test_any_missed_call_gets_a_decision(
    caller: str | None, name: str | None, voicemail: bool, ended: dt.datetime
) -> None:
    decision = decide_for(
        missed_call(ended, caller=caller, caller_name=name, voicemail_left=voicemail)
    )
    if isinstance(decision, Send):
        assert decision.body and "{" not in decision.body
        assert decision.segments >= 1
        assert decision.send_at == ended + RULES.delay
    else:
        assert decision.reason in {"withheld", "internal_extension", "invalid_number", "fixed_line"}
