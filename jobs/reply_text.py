"""The text of a server's reply, bounded before anything scrubs, classifies or stores it.

A reply is the one thing a server can make as long as it likes, and its text is scrubbed,
matched against every rule and copied into the result and so into each stored event. Only its
head is kept: that is where the codes and key phrases the rules look for are.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobs.bounds import MAX_REPLY_TEXT_CHARS
from jobs.redact import scrub, secret_forms

__all__ = ["MAX_REPLY_TEXT_CHARS", "capped", "text_of_lines", "window"]


def _marker(left_off: int) -> str:
    return f"… [{left_off} more characters]"


def _safe_cut(text: str, limit: int, forms: set[str]) -> int:
    """`limit`, moved back to the start of any secret that runs across it."""
    cut = limit
    while True:
        # An occurrence that runs across the cut lies within len(form) - 1 characters either side.
        starts = [
            start
            for form in forms
            if (start := text.find(form, max(0, cut - len(form) + 1), cut + len(form) - 1)) != -1
        ]
        if not starts:
            return cut
        cut = min(starts)  # another secret may overlap this one and start earlier still


def capped(text: str, secrets: Iterable[str], unread: int = 0) -> str:
    """`text` scrubbed and cut to MAX_REPLY_TEXT_CHARS, the cut marked with what was left off.

    `unread`: how much of the reply follows `text` that the caller never decoded (counted in
    bytes, the same as characters for the ASCII replies servers send). `text` should then run to
    window(secrets) characters, as text_of_lines() sees to; a shorter one is cut shorter.

    Cut first, then scrub the head, with the cut moved back so that no secret runs across it. Not
    the other way round: scrubbing a bounded window and then cutting would leave the start of a
    secret that runs off the window's end, and the masks before it, shorter than what they
    replace, can pull that start back inside the cap (a reply that echoes the password many
    times). Moved back, the head holds whole secrets only, which scrub() masks.
    """
    secrets = tuple(secrets)
    if not unread and len(text) <= MAX_REPLY_TEXT_CHARS:
        # Sliced too: masks outgrow a secret of one or two characters.
        return scrub(text, secrets)[:MAX_REPLY_TEXT_CHARS]
    forms = secret_forms(secrets)
    longest = max(map(len, forms), default=1)
    # Past the end of a partial text a secret may go on unseen: stop short enough to see it whole.
    end = len(text) - (longest - 1) if unread else len(text)
    cut = _safe_cut(text, max(0, min(MAX_REPLY_TEXT_CHARS, end)), forms)
    head = scrub(text[:cut], secrets)[:MAX_REPLY_TEXT_CHARS]
    return head + _marker(len(text) - cut + unread)


def window(secrets: Iterable[str]) -> int:
    """How many characters capped() needs to see to cut a longer reply at the cap."""
    return MAX_REPLY_TEXT_CHARS + max(map(len, secret_forms(secrets)), default=1)


def text_of_lines(lines: Iterable[bytes], secrets: Iterable[str]) -> str:
    """IMAP response lines joined by spaces and capped(), decoding no more than the cap needs.

    A 16 MiB line is sliced, not decoded or joined whole: only its head becomes a string.
    """
    secrets = tuple(secrets)
    wanted = 4 * window(secrets)  # bytes: a character takes up to four in UTF-8
    head = bytearray()
    total = 0
    for line in lines:
        if not line:
            continue
        if total:
            total += 1
            if len(head) < wanted:
                head += b" "
        total += len(line)
        head += line[: max(0, wanted - len(head))]
    return capped(head.decode(errors="replace"), secrets, unread=total - len(head))
