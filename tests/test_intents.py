"""Intent of a reply, over real-looking messages: an emergency must never get a booking link."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.rules import settings
from agent.rules.intents import PhraseRules

RULES = PhraseRules.from_settings(settings.defaults())


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Water everywhere in the basement!!", "emergency"),
        ("we have NO HEAT and a newborn", "emergency"),
        ("No heat, can you come today?", "emergency"),  # emergency beats scheduling
        ("I smell gas in the kitchen", "emergency"),
        ("Gas smell near the boiler 😨", "emergency"),
        ("pipe burst under the sink", "emergency"),
        ("sewage backing up into the shower", "emergency"),
        ("URGENT", "emergency"),
        ("Not urgent, whenever you have time next week", "other"),  # negated
        ("It isn't an emergency. What do you charge for a service?", "pricing"),
        ("Can I book a visit for Tuesday?", "scheduling"),
        ("When can you come out?", "scheduling"),
        ("what time are you available tomorrow", "scheduling"),
        ("How much for a new water heater?", "pricing"),
        ("Can I get a quote", "pricing"),
        ("Thanks, my husband will call you back", "other"),
        ("ok", "other"),
        ("🙂", "other"),
        ("", "other"),
        ("Bonjour, c'est pour une fuite", "other"),  # a site adds its own language
        ("Book-keeping question", "scheduling"),  # whole words: "book" counts
        ("Facebook sent me", "other"),  # …but not inside another word
    ],
)
def test_default_rules(text: str, intent: str) -> None:
    assert RULES.classify(text) == intent


def test_site_specific_phrases_in_other_languages() -> None:
    rules = PhraseRules.of(emergency=["fuite", "inondation", "pas de chauffage"],
                           scheduling=["rendez-vous"], pricing=["prix", "devis"])
    assert rules.classify("Inondation dans la cave !") == "emergency"
    assert rules.classify("Pas de chauffage depuis hier") == "emergency"
    assert rules.classify("Un rendez-vous jeudi ?") == "scheduling"
    assert rules.classify("Quel est le prix ?") == "pricing"


@given(st.text(max_size=300))
def test_any_text_gets_an_intent(text: str) -> None:
    assert RULES.classify(text) in ("emergency", "scheduling", "pricing", "other")
