"""Is a customer's text an opt-out? (pure; standard library only)

Since 11 April 2025 the FCC requires honouring an opt-out made "by any reasonable
means" (47 CFR 64.1200(a)(10)): the keywords (STOP, QUIT, END, REVOKE, OPT OUT,
CANCEL, UNSUBSCRIBE) and other wording a reasonable person would read as one.
Reading free text wrongly either way hurts: a missed opt-out is a violation, a
false one silences a customer who asked us to "stop by at 3". So the rule is
conservative and has three answers:

``opt_out``   every word of the message belongs to an opt-out keyword
              (`keywords.optout`) or phrase (`keywords.optout_phrases`), or is a
              courtesy word ("please", "thanks", "por favor"): "Stop texting me
              please!", "No más mensajes, gracias", "STOP. Unsubscribe me." A
              sentence made only of a phrase of two words or more counts too,
              whatever the other sentences say ("Please stop texting me. I found
              someone else.").
``possible``  a phrase inside a longer sentence ("I got no more texts after
              Tuesday"), a strong word anywhere ("how do I unsubscribe from
              these"), or a weak word (stop, end, cancel, quit…) that is not
              followed by a word showing another meaning ("please make it
              stop"), or a word about texts next to a refusal ("I don't want
              these texts"). Staff decide, with one click in the inbox.
``None``      nothing of the kind, or a weak word followed by a word that gives it
              another meaning: "stop by at 3", "can you stop the leak", "cancel
              my appointment", "by the end of the week".

Matching is on words after NFKC (a phone's fullwidth or styled letters),
case-folding, accent folding ("no mas" = "no más") and dropping punctuation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["opt_out", "possible"]

# words that change nothing in an opt-out: "STOP please", "ok stop", "stop, thanks"
COURTESY = frozenset({
    "please", "pls", "plz", "plse", "thanks", "thank", "you", "thx", "ty", "ok", "okay",
    "sorry", "hi", "hello", "hey", "now", "just", "asap", "immediately", "again", "all",
    "already", "right", "away", "sir", "maam", "guys", "for", "good", "kindly", "seriously",
    "por", "favor", "gracias", "ya", "hola", "ahora", "porfa", "xfa",
})
# opt-out keywords that mean nothing else in a customer's text: anywhere, they are a
# possible opt-out at least
STRONG = frozenset({"unsubscribe", "stopall", "optout", "revoke", "unsub", "desuscribir",
                    "desuscribirme"})
# opt-out words with everyday meanings: inside a sentence they are ordinary words when
# the next word gives them one ("stop by", "stop the leak", "cancel my appointment")
WEAK = frozenset({"stop", "end", "cancel", "quit", "alto", "basta", "baja", "cancelar"})
# after a weak word, these still point at texts or at the customer being contacted
ABOUT_TEXTS = frozenset({
    "texting", "texts", "text", "txt", "txts", "messaging", "messages", "message", "msgs",
    "sms", "sending", "contacting", "it", "this", "these", "them", "that", "now",
    "please", "pls", "plz", "me", "all", "mensajes", "mensaje", "de", "ya",
})
# a word about texts next to a refusal anywhere in a sentence ("I don't want these texts")
# is worth a person's look, never an opt-out on its own
MESSAGING = frozenset({"text", "texts", "texting", "txt", "txts", "message", "messages",
                       "messaging", "msgs", "sms", "mensajes", "mensaje"})
REFUSALS = frozenset({"dont", "not", "no", "never", "stop", "quit", "remove", "off",
                      "unsubscribe", "nunca"})
_APOSTROPHES = str.maketrans({"’": "", "'": "", "‘": "", "`": "", "´": ""})
_SENTENCE = re.compile(r"[.!?;\n]+")


def words(text: str) -> list[str]:
    """The words of a text as matching sees them: "Don’t TEXT me!!" → don't → "dont"."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    stripped = "".join(ch for ch in unicodedata.normalize("NFKD", folded)
                       if not unicodedata.combining(ch))
    cleaned = "".join(ch if unicodedata.category(ch)[0] in "LN" else " " for ch in stripped)
    return cleaned.split()


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(words(text))


@dataclass(frozen=True)
class Rules:
    """The opt-out keywords and phrases, each as a tuple of words."""

    phrases: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, keywords: Iterable[str], phrases: Iterable[str]) -> Rules:
        found = {_phrase(item) for item in (*keywords, *phrases)}
        # longest first: "stop texting me" covers more than "stop"
        return cls(tuple(sorted((p for p in found if p), key=lambda p: (-len(p), p))))

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Rules:
        return cls.of(values["keywords.optout"], values["keywords.optout_phrases"])


def _covered(tokens: list[str], rules: Rules) -> tuple[bool, int]:
    """(every word is an opt-out phrase's or a courtesy word, the longest phrase used);
    a sentence of courtesy words alone is not covered."""
    position, longest = 0, 0
    while position < len(tokens):
        for phrase in rules.phrases:
            if tuple(tokens[position:position + len(phrase)]) == phrase:
                position += len(phrase)
                longest = max(longest, len(phrase))
                break
        else:
            if tokens[position] not in COURTESY:
                return False, 0
            position += 1
    return longest > 0, longest


def _hint(tokens: list[str], rules: Rules) -> bool:
    """Something in a sentence that may be an opt-out, for a person to judge."""
    for i, word in enumerate(tokens):
        if word in STRONG:
            return True
        if word in WEAK:
            following = tokens[i + 1] if i + 1 < len(tokens) else None
            if following is None or following in ABOUT_TEXTS:
                return True
    if MESSAGING.intersection(tokens) and REFUSALS.intersection(tokens):
        return True
    for phrase in rules.phrases:
        if len(phrase) > 1 and any(tuple(tokens[i:i + len(phrase)]) == phrase
                                   for i in range(len(tokens) - len(phrase) + 1)):
            return True
    return False


def classify(text: str, rules: Rules) -> Verdict | None:
    """"opt_out", "possible" or None for a customer's text (see the module docstring)."""
    whole = words(text)
    if not whole:
        return None
    if _covered(whole, rules)[0]:
        return "opt_out"
    sentences = [tokens for tokens in (words(part) for part in _SENTENCE.split(text)) if tokens]
    for tokens in sentences:
        covered, longest = _covered(tokens, rules)
        if covered and longest > 1:
            return "opt_out"
    if any(_hint(tokens, rules) for tokens in sentences):
        return "possible"
    return None
