"""Untrusted text (names and messages from result files, folder names) made safe to print on a terminal.

Rich escapes markup when given a `Text`, but it passes control characters through: an ANSI escape sequence
in an experiment name would recolour, move the cursor or retitle the user's terminal. Escape sequences are
removed whole; other control characters (C0, DEL, C1) and the bidirectional overrides that reorder what a
reader sees are removed too.
"""

from __future__ import annotations

import re

_ESCAPE_SEQUENCE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, hyperlinks
    r"|[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS strings
    r"|[ -/]*[0-~])?"  # two-character sequences (or a lone ESC)
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_AND_NEWLINES = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` without escape sequences and control characters (tabs and newlines become spaces unless kept)."""
    text = _ESCAPE_SEQUENCE.sub("", text)
    if keep_newlines:
        return _CONTROL.sub("", text.replace("\t", " "))
    return _CONTROL_AND_NEWLINES.sub("", text.replace("\t", " ").replace("\n", " "))
