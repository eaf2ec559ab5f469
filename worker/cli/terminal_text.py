"""Text from outside (inbox ids, host names, server replies) made safe to print on a terminal.

rich reads `[...]` in a plain string as markup (an inbox id `evil[/]` is a markup error) and a
terminal obeys escape sequences (a server's reply could retitle the window or clear the screen):
outside text goes to rich only as a Text, never as markup, with control characters written out.
"""

from __future__ import annotations

import re

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """`value` as a string with every control character shown as \\xNN."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value))


def plain(value: object, style: str = "") -> Text:
    """`value` for rich: no markup, no control characters, an optional style."""
    return Text(printable(value), style=style)
