"""The naive checker: one inbox after another with the standard library's smtplib and imaplib.

Same sequences as inboxcheck (SMTP: EHLO, STARTTLS, EHLO, AUTH PLAIN, QUIT; IMAP over implicit
TLS: LOGIN, EXAMINE INBOX, LOGOUT), SMTP then IMAP, no concurrency. Run on a sample of inboxes;
the runner extrapolates its rate to N.
"""

from __future__ import annotations

import imaplib
import smtplib
import ssl


def check(
    host: str,
    smtp_port: int,
    imap_port: int,
    user: str,
    password: str,
    context: ssl.SSLContext,
    timeout: float = 30,
) -> None:
    with smtplib.SMTP(host, smtp_port, local_hostname="localhost", timeout=timeout) as smtp:
        smtp.ehlo()
        smtp.starttls(context=context)
        smtp.ehlo()
        smtp.auth("PLAIN", lambda challenge=None: f"\0{user}\0{password}", initial_response_ok=True)
        smtp.quit()
    imap = imaplib.IMAP4_SSL(host, imap_port, ssl_context=context, timeout=timeout)
    try:
        imap.login(user, password)
        status, _ = imap.select("INBOX", readonly=True)  # readonly select = EXAMINE
        if status != "OK":
            raise RuntimeError("IMAP EXAMINE failed")
    finally:
        imap.logout()
