r"""Caller ID names as Asterisk hands them over, and as the caller's phone sent them.

chan_pjsip keeps the SIP From header's display name with its quoted-pair escapes
(\" and \\), and AMI then writes the result through ast_escape_c (\\ \" \' \n ...):
a caller whose phone sent Sean O'Brien shows up as ``Sean O\'Brien``. Both are
undone here, once, for the AMI path and the CDR path alike.
"""

from __future__ import annotations

import re

# AMI writes a caller ID name through Asterisk's ast_escape_c (\\ \" \' \n …)
_AMI_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_BACKSLASH_PAIR = re.compile(r"\\(.)", re.DOTALL)


def ami_unescape(value: str) -> str:
    """A header value as Asterisk had it before AMI escaped it ("O\\'Brien" → "O'Brien");
    a backslash before anything else is left as it came."""
    return _BACKSLASH_PAIR.sub(lambda pair: _AMI_ESCAPES.get(pair[1], pair[0]), value)


def sip_display_name(value: str) -> str:
    """A SIP display name without its quoted-pair escapes (RFC 3261: \\" → ", \\\\ → \\),
    which chan_pjsip keeps in the caller ID name."""
    return _BACKSLASH_PAIR.sub(r"\1", value)
