"""Opt-outs in the customer's own words: a labelled table of real-looking replies.

Labels are what a careful person at the front desk would do with the text:
"opt_out" (a reasonable person reads it as "stop texting me"), "possible" (it might
be; a person should look) and "not" (an ordinary reply). The classifier may send an
opt-out to staff as "possible" (a person then clicks "Opt out"), but must never opt
out a "not" row, and must never let an opt-out pass unnoticed.

`pytest -s tests/test_revocation.py` prints the figures.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.rules import revocation, settings

RULES = revocation.Rules.from_settings(settings.defaults())

OPT_OUT, POSSIBLE, NOT = "opt_out", "possible", "not"

TABLE: list[tuple[str, str]] = [
    # the keywords, as phones and people type them
    ("STOP", OPT_OUT),
    ("Stop.", OPT_OUT),
    ("stop!!!", OPT_OUT),
    ("ＳＴＯＰ", OPT_OUT),
    ("Unsubscribe", OPT_OUT),
    ("cancel", OPT_OUT),
    ("QUIT", OPT_OUT),
    ("opt out", OPT_OUT),
    ("Revoke", OPT_OUT),
    ("End", OPT_OUT),
    ("STOP please", OPT_OUT),
    ("Ok stop", OPT_OUT),
    ("stop stop stop", OPT_OUT),
    ("STOP. Unsubscribe me.", OPT_OUT),
    # phrases
    ("Please stop texting me", OPT_OUT),
    ("please stop texting me!", OPT_OUT),
    ("Stop texting me, thanks", OPT_OUT),
    ("stop sending me messages", OPT_OUT),
    ("Stop sending me texts please", OPT_OUT),
    ("Remove me from your list", OPT_OUT),
    ("remove me from your list please", OPT_OUT),
    ("Take me off your list.", OPT_OUT),
    ("No more texts", OPT_OUT),
    ("no more texts please!!", OPT_OUT),
    ("Don't text me", OPT_OUT),
    ("Don’t text me again", OPT_OUT),
    ("DO NOT TEXT ME", OPT_OUT),
    ("unsubscribe me", OPT_OUT),
    ("Unsubscribe me please, thank you", OPT_OUT),
    ("Opt me out", OPT_OUT),
    ("Leave me alone", OPT_OUT),
    ("Please stop texting me. I already found a plumber.", OPT_OUT),
    ("Hi, please remove me from your list. Thanks", OPT_OUT),
    ("Stop contacting me", OPT_OUT),
    # Spanish
    ("No más mensajes", OPT_OUT),
    ("no mas mensajes por favor", OPT_OUT),
    ("No más", OPT_OUT),
    ("Alto", OPT_OUT),
    ("BASTA", OPT_OUT),
    ("basta ya", OPT_OUT),
    ("No me manden mensajes", OPT_OUT),
    ("Dejen de escribirme por favor", OPT_OUT),
    ("Quiero darme de baja", OPT_OUT),
    ("no me escriban más, gracias", OPT_OUT),
    ("please don't text again", OPT_OUT),
    ("Please take my number off your list", OPT_OUT),
    # opt-outs a reasonable person would see, that the rules only flag for staff
    ("Please don't contact me anymore", OPT_OUT),
    ("Who is this? Stop", OPT_OUT),
    ("I don't want these texts", OPT_OUT),
    # might be an opt-out: a person should look
    ("Stop. I already found someone", POSSIBLE),
    ("Please make it stop", POSSIBLE),
    ("How do I unsubscribe from these?", POSSIBLE),
    ("I want to cancel", POSSIBLE),
    ("Why do you keep texting me? stop", POSSIBLE),
    ("Don't text me, call me instead", POSSIBLE),
    ("do not text me after 8pm", POSSIBLE),
    ("Stop texting my husband, he's not the homeowner", POSSIBLE),
    ("can you stop the texts and just call", POSSIBLE),
    ("I told you already to remove me from your list, this is the third time", POSSIBLE),
    ("ya no quiero mensajes, basta", POSSIBLE),
    ("Wrong number. Stop", POSSIBLE),
    ("No text messages after 9 please, I work nights", POSSIBLE),
    # ordinary replies
    ("Can you stop by at 3?", NOT),
    ("can you stop the leak before Friday", NOT),
    ("Stop by tomorrow morning if you can", NOT),
    ("I need to cancel my appointment on Tuesday", NOT),
    ("Please cancel the 3pm visit and rebook for Monday", NOT),
    ("The water won't stop running", NOT),
    ("My water heater quit working last night", NOT),
    ("Can you come by the end of the week?", NOT),
    ("Yes please call me back", NOT),
    ("How much for a new faucet?", NOT),
    ("Thanks! See you at 10", NOT),
    ("What time can you come?", NOT),
    ("Please stop calling me about the boiler", NOT),
    ("Is there a stop valve under the sink?", NOT),
    ("The end of the pipe is cracked", NOT),
    ("Water everywhere, help!", NOT),
    ("No heat since this morning", NOT),
    ("Sounds good, text me when you're on the way", NOT),
    ("Sí, mañana a las 3 está bien", NOT),
    ("¿Cuánto cuesta la visita?", NOT),
    ("Quiero una cita para el lunes", NOT),
    ("ok", NOT),
    ("Can you text me the quote?", NOT),
    ("Stop in whenever, I'm home all day", NOT),
    ("the drain stopped draining", NOT),
    ("Gracias!", NOT),
    ("Please", NOT),
    ("Don't call, text me instead", NOT),  # flagged for a look, never opted out
    ("I never got your text, can you resend the quote?", NOT),
    ("", NOT),
]


def verdict(text: str) -> str:
    return revocation.classify(text, RULES) or NOT


@pytest.mark.parametrize(("text", "label"), TABLE)
def test_no_false_opt_out_and_no_opt_out_unnoticed(text: str, label: str) -> None:
    found = verdict(text)
    if label == NOT:
        assert found != OPT_OUT, f"{text!r} is an ordinary reply, not an opt-out"
    if label == OPT_OUT:
        assert found != NOT, f"{text!r} is an opt-out and went unnoticed"
    if label == POSSIBLE:
        assert found in (POSSIBLE, OPT_OUT), f"{text!r} should reach staff as a possible opt-out"


def figures() -> dict[str, float]:
    """Precision and recall of the automatic opt-out, and of "reaches staff or acts"."""
    acted = [(label, verdict(text)) for text, label in TABLE]
    auto = [label for label, found in acted if found == OPT_OUT]
    opt_outs = [found for label, found in acted if label == OPT_OUT]
    noticed = [label for label, found in acted if found != NOT]
    return {
        "rows": len(TABLE),
        "opt_out_rows": len(opt_outs),
        "precision": auto.count(OPT_OUT) / len(auto),
        "recall": opt_outs.count(OPT_OUT) / len(opt_outs),
        # opt-outs acted on at once or shown to staff
        "recall_with_staff": sum(found != NOT for found in opt_outs) / len(opt_outs),
        "flagged_not_rows": sum(1 for label in noticed if label == NOT),
    }


def test_precision_and_recall() -> None:
    result = figures()
    print("\nopt-out phrase table:", ", ".join(
        f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in result.items()))
    assert result["rows"] >= 60
    assert result["precision"] == 1.0  # no false opt-outs, among any rows
    assert result["recall"] >= 0.9
    assert result["recall_with_staff"] == 1.0
    assert result["flagged_not_rows"] <= 2  # a person glances at them; nothing is done


def test_a_site_adds_its_own_phrase() -> None:
    rules = revocation.Rules.of(["STOP"], ["arrête de m'écrire"])
    assert revocation.classify("Arrête de m’écrire!", rules) == "opt_out"
    assert revocation.classify("please stop texting me", rules) == "possible"  # not listed


def test_courtesy_only_phrases_are_refused() -> None:
    with pytest.raises(settings.SettingError, match=re.escape("keywords.optout_phrases")):
        settings.validate("keywords.optout_phrases", ["stop texting me", "please thanks"])


@given(st.text(max_size=200))
def test_classify_never_crashes(text: str) -> None:
    assert revocation.classify(text, RULES) in ("opt_out", "possible", None)
