"""Every bound on what a server may send a check, in one place, with the reason for its size.

A worker talks to servers nobody vetted, so each read is bounded in bytes (and lines where the
count costs memory by itself); past a bound the check ends at once as PROTOCOL_ERROR and what
was read is dropped. Time is bounded separately: every step has its own limit and the whole
conversation a deadline (jobs.steps, jobs.protocol_run), so a server dripping a byte at a time
costs a check its limit at most. Each bound is many times what real servers send and small
enough that a worker's full complement of checks, all against hostile servers, stays within the
memory budget stated in the README. Two more live with the code they guard, each with its
reason: an OAuth2 error challenge, jobs.sasl.MAX_CHALLENGE_CHARS (2 KiB), and a token
endpoint's HTTP answer, jobs.token_http.MAX_RESPONSE_BYTES (64 KiB).
"""

from __future__ import annotations

from aiosmtplib.protocol import MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH

# IMAP (RFC 3501 sets no line length; RFC 7162 3.2.1 asks clients to accept lines of 8192 octets).
# What the check reads (greeting, CAPABILITY, LOGIN and EXAMINE answers) is short: Gmail's
# CAPABILITY line is about 200 bytes, Dovecot's with every extension about 400, an EXAMINE answer
# with a long FLAGS list a few KiB. aioimaplib keeps an unfinished line whole and rescans it on
# every read, so an endless one would cost memory and time without bound.
IMAP_MAX_LINE_BYTES = 65_536
# Everything a server sends in answer to one command, literals included: real answers are under
# 4 KiB (EXAMINE's is 8-10 lines), so two longest lines' worth is far beyond any of them. A check
# held just under it costs a worker about 0.2 MB (bench --hostile).
IMAP_MAX_RESPONSE_BYTES = 2 * IMAP_MAX_LINE_BYTES
# Lines in answer to one command before its tagged completion. Each costs a Python object and a
# parse, so a flood of empty or tiny lines is bounded by count as well as by bytes.
IMAP_MAX_RESPONSE_LINES = 1_000

# SMTP: aiosmtplib's own bounds, which it enforces itself ("Response too long"). RFC 5321
# 4.5.3.1.5 allows reply lines of 512 octets; EHLO answers, the longest real multi-line replies,
# run to a few hundred bytes over 10-20 lines.
SMTP_MAX_LINE_BYTES = MAX_LINE_LENGTH
SMTP_MAX_REPLY_BYTES = MAX_RESPONSE_LENGTH

# TLS: OpenSSL refuses a certificate message over its max_cert_list, 100 KiB by default
# (SSL_CTX_set_max_cert_list), which Python's ssl module does not change. Real chains are 3-6 KiB
# (leaf and one or two intermediates). OpenSSL reports EXCESSIVE_MESSAGE_SIZE.
TLS_MAX_CERT_CHAIN_BYTES = 100 * 1024

# What of a reply is kept, scrubbed and classified (jobs.reply_text). Real replies run to a few
# hundred characters at most: Gmail's longest alerts stay under 300, Microsoft's
# SmtpClientAuthentication and throttling replies under 200, a two-line SMTP reply about 150. Over
# ten times the longest leaves room for any provider's wording, while the scrub, every rule's scan
# and each stored copy of the event stay small whatever the server sends.
MAX_REPLY_TEXT_CHARS = 4096


def more_bytes_than(limit: int, what: str) -> str:
    """The plain explanation a check gives when a server passes a byte bound."""
    return f"the server sent more than {limit} bytes {what}"


IMAP_LINE_TOO_LONG = more_bytes_than(IMAP_MAX_LINE_BYTES, "without ending a line")
IMAP_RESPONSE_TOO_LONG = more_bytes_than(IMAP_MAX_RESPONSE_BYTES, "in answer to one command")
IMAP_TOO_MANY_LINES = (
    f"the server sent more than {IMAP_MAX_RESPONSE_LINES} lines in answer to one command "
    "without completing it"
)
SMTP_REPLY_TOO_LONG = more_bytes_than(
    SMTP_MAX_REPLY_BYTES, f"in one reply, or more than {SMTP_MAX_LINE_BYTES} without ending a line"
)
CERT_CHAIN_TOO_LONG = more_bytes_than(
    TLS_MAX_CERT_CHAIN_BYTES, "in one TLS handshake message (its certificate chain)"
)
