"""Secrets masked in every form a server may echo them, and short printable excerpts of what is
not the protocol at all."""

from __future__ import annotations

import base64

from jobs.redact import EXCERPT_CHARS, MASK, excerpt, scrub


def test_a_secret_is_masked_raw_base64_unpadded_and_imap_quoted() -> None:
    secret = 'pa"ss\\w'  # base64 "cGEic3Ncdw==": padded, so its unpadded form differs
    encoded = base64.b64encode(secret.encode()).decode()
    quoted = 'pa\\"ss\\\\w'
    for form in (secret, encoded, encoded.rstrip("="), quoted):
        assert scrub(f"<{form}>", [secret]) == f"<{MASK}>", form


def test_the_longer_of_two_overlapping_secrets_is_masked_whole() -> None:
    assert scrub("a Secret1-b z", ["Secret1", "Secret1-b"]) == f"a {MASK} z"
    assert scrub("a Secret1-b z", ["Secret1-b", "Secret1"]) == f"a {MASK} z"


def test_an_empty_secret_masks_nothing() -> None:
    assert scrub("535 bad credentials", ["", "hunter2"]) == "535 bad credentials"


def test_an_excerpt_keeps_printable_ascii_and_replaces_the_rest() -> None:
    assert excerpt(" ~ok\x7f\x1f\u00e9 ") == "~ok???"


def test_an_excerpt_at_the_limit_is_whole_and_one_longer_is_cut_to_the_limit() -> None:
    assert excerpt("a" * 10, limit=10) == "a" * 10
    assert excerpt("a" * 11, limit=10) == "a" * 7 + "..."
    assert len(excerpt("b" * 1000)) == EXCERPT_CHARS


def test_a_secret_inside_another_is_masked_after_the_longer_one() -> None:
    # Longest first, whatever their alphabetical order: "zz" sorts after "azz".
    assert scrub("a azz z", ["zz", "azz"]) == f"a {MASK} z"


def test_only_whole_forms_are_masked() -> None:
    # "abW" is "YWJX" in base64: text that merely begins like it stays as the server wrote it.
    assert scrub("535 YWJj rejected", ["abW"]) == "535 YWJj rejected"
