"""Intent of a customer's reply: emergency, scheduling, pricing, or other.

Rules are phrases (settings `intents.*`) matched case-insensitively as whole
words anywhere in the message, with a simple guard against negation ("not
urgent", "no emergency"). Emergency wins over everything: "no heat, can you
come today?" must ring the on-call tech, not send a booking link.

`Classifier` is the seam for a smarter model later: anything with
`classify(text) -> Intent` can replace `PhraseRules`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Intent = Literal["emergency", "scheduling", "pricing", "other"]
ORDER: tuple[Intent, ...] = ("emergency", "scheduling", "pricing")
_NEGATIONS = frozenset({"not", "no", "isn't", "isnt", "non", "never", "without"})
_WORD = re.compile(r"[\w']+")


class Classifier(Protocol):
    def classify(self, text: str) -> Intent: ...


def words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFC", text).casefold().replace("’", "'")
    return _WORD.findall(folded)


@dataclass(frozen=True)
class PhraseRules:
    phrases: Mapping[Intent, tuple[tuple[str, ...], ...]]

    @classmethod
    def of(cls, **lists: Iterable[str]) -> PhraseRules:
        return cls({intent: tuple(tuple(words(p)) for p in lists.get(intent, ()) if words(p))
                    for intent in ORDER})

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> PhraseRules:
        return cls.of(emergency=values["intents.emergency"],
                      scheduling=values["intents.scheduling"],
                      pricing=values["intents.pricing"])

    def classify(self, text: str) -> Intent:
        tokens = words(text)
        for intent in ORDER:
            if any(_found(tokens, phrase) for phrase in self.phrases.get(intent, ())):
                return intent
        return "other"


def _found(tokens: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i:i + n]) == phrase:
            before = tokens[max(0, i - 2):i]
            # "not urgent", "no emergency", "isn't an emergency" — but a phrase that
            # itself starts with a negation ("no heat") is meant as written
            if phrase[0] not in _NEGATIONS and any(
                    w in _NEGATIONS for w in before if w not in ("a", "an")):
                continue
            return True
    return False
