"""Which characters a series id or a label value may hold, and how to name one that it may not.

Printable is Python's str.isprintable(): letters, marks, numbers, punctuation, symbols and the
plain space U+0020. Refused are the characters a reader cannot see or tell apart: control
characters (tab, newline), invisible format characters (U+200B ZERO WIDTH SPACE, U+FEFF),
other spaces (U+00A0 NO-BREAK SPACE), line and paragraph separators, private-use, surrogate and
unassigned code points. Their names come from the Unicode database, so a caller learns which
character to remove, not just that one is wrong.
"""

import unicodedata

# Unicode general categories of the characters str.isprintable() refuses, as a reader would
# call them (the article goes with the description).
_KINDS = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zs": "an unusual space",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Co": "a private-use character",
    "Cs": "a surrogate code point",
    "Cn": "an unassigned code point",
}


def describe_character(character: str) -> str:
    """'an invisible format character U+200B (ZERO WIDTH SPACE)': what kind of character it is,
    its code point and, where Unicode gives one, its name."""
    kind = _KINDS.get(unicodedata.category(character), "a character")
    code_point = f"U+{ord(character):04X}"
    name = unicodedata.name(character, "")
    return f"{kind} {code_point} ({name})" if name else f"{kind} {code_point}"


def unprintable_character(text: str) -> str | None:
    """None when every character of text is printable; else the first one that is not,
    described with its position: 'an invisible format character U+200B (ZERO WIDTH SPACE) at
    position 3' (counted from 0)."""
    if text.isprintable():
        return None
    position, character = next((index, c) for index, c in enumerate(text) if not c.isprintable())
    return f"{describe_character(character)} at position {position}"
