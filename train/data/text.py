"""Repair transcripts whose Windows-1252 characters were mangled on the way into a pickle.

Two kinds of damage occur in the ERC files:
* cp1252 bytes decoded as latin-1 (Python 2 pickles read with ``encoding="latin1"``): a curly
  apostrophe arrives as the C1 control ``'\\x92'``. Each C1 control that cp1252 defines is mapped
  to its cp1252 character (``'\\x92'`` -> ``'’'``).
* UTF-8 bytes decoded as latin-1 or cp1252 ("mojibake": ``'â\\x80\\x99'`` or ``'â€™'``): the
  whole string is re-encoded and decoded as UTF-8 when that round trip succeeds.
Text already in proper Unicode is returned unchanged.
"""
from __future__ import annotations

# C1 controls U+0080..U+009F that cp1252 assigns a printable character to (5 are undefined).
_C1_TO_CP1252: dict[str, str] = {}
for _b in range(0x80, 0xA0):
    try:
        _C1_TO_CP1252[chr(_b)] = bytes([_b]).decode("cp1252")
    except UnicodeDecodeError:
        pass
_C1_TABLE = str.maketrans(_C1_TO_CP1252)


def _is_high(ch: str) -> bool:
    return "\x80" <= ch <= "\xff"


def fix_text(text: str) -> str:
    """Return ``text`` with cp1252/UTF-8 mojibake repaired (see module docstring)."""
    if text.isascii():
        return text
    for codec in ("latin-1", "cp1252"):
        try:
            raw = text.encode(codec)
        except UnicodeEncodeError:
            continue
        if not any(b >= 0x80 for b in raw):
            break
        try:
            fixed = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if fixed != text:
            return fixed
    if any(_is_high(ch) for ch in text):
        return text.translate(_C1_TABLE)
    return text


def decode_cp1252(raw: bytes) -> str:
    """Decode cp1252 bytes; the 5 bytes cp1252 leaves undefined become C1 controls, not errors."""
    return raw.decode("latin-1").translate(_C1_TABLE)
