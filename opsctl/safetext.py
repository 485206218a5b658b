"""Text that came from an inventory or a host, made safe to show.

Host names, addresses, file contents and error messages are data: in a rich table they must not
be read as markup (a host named `web[/]` crashed the table), on a terminal they must not carry
escape sequences (a crafted log line could move the cursor, rewrite the screen or set the window
title), and in JUnit XML they must not hold characters XML 1.0 forbids (CI parsers reject the
whole report). Control characters are shown as visible escapes, never dropped, so a person can
still see that something odd was there. So are bidirectional overrides and isolates (U+202E
shows "txt.exe" as "exe.txt": a value must read as what it is) and lone surrogates (what
surrogateescape makes of a host's non-UTF-8 bytes: no UTF-8 terminal or JSON reader takes them,
and rich crashed writing one).
"""

from __future__ import annotations

import re

from rich.text import Text

# C0 controls except tab and newline, DEL, and C1 controls (0x80-0x9f: CSI, OSC and others);
# bidi marks, embeddings, overrides and isolates, and the line and paragraph separators (they
# reorder or break what a terminal shows); lone surrogates.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                      r"\ud800-\udfff]")
# What XML 1.0 cannot hold at all, escaped or not (besides the characters above).
_NOT_XML = re.compile(r"[\ufffe\uffff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object) -> str:
    """`value` as text with every control character but tab and newline shown as \\xNN, and
    bidi controls, line separators and lone surrogates as \\uXXXX."""
    return _CONTROL.sub(_escape_char, str(value))


def plain(value: object) -> Text:
    """A rich cell that shows `value` literally: no markup, no emoji codes, no control characters."""
    return Text(visible(value))


def markdown_cell(value: object) -> str:
    """A Markdown table cell: one line, no column breaks, no HTML a ticket system would render."""
    return visible(value).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def xml_text(value: object) -> str:
    """`value` with nothing XML 1.0 forbids (ElementTree escapes &, < and > itself)."""
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", visible(value))
