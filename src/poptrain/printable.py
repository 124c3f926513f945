"""Run data made safe to print on a terminal: control characters shown as escapes."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline
_CONTROL_AND_LINES = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object, *, lines: bool = True) -> str:
    """``str(value)`` with control characters (escape sequences that would recolour the
    terminal or set its title) written as ``\\x1b``; with ``lines=False`` tabs and newlines too."""
    pattern = _CONTROL if lines else _CONTROL_AND_LINES
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
