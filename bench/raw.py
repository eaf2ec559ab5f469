"""The raw ceiling: the same SMTP and IMAP sequences inboxcheck runs, with the same libraries
(aiosmtplib, aioimaplib), and nothing else -- no step timers, no error mapping, no result model.

SMTP: connect, greeting, EHLO, STARTTLS, EHLO, AUTH PLAIN, QUIT.
IMAP: connect, implicit TLS, greeting, (CAPABILITY), LOGIN, EXAMINE INBOX, LOGOUT.
Both protocols of one check run concurrently (as validate_inbox does); checks run in one
asyncio.gather bounded by a semaphore of C.
"""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
from aioimaplib import aioimaplib


async def smtp_sequence(host: str, port: int, user: str, password: str, context: ssl.SSLContext) -> None:
    smtp = aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=False, tls_context=context, local_hostname="localhost", timeout=30
    )
    try:
        await smtp.connect()
        await smtp.ehlo()
        await smtp.starttls(server_hostname=host, tls_context=context)
        await smtp.ehlo()
        await smtp.auth_plain(user, password)
        await smtp.quit()
    finally:
        smtp.close()


async def imap_sequence(host: str, port: int, user: str, password: str, context: ssl.SSLContext) -> None:
    imap = aioimaplib.IMAP4_SSL(host=host, port=port, ssl_context=context, timeout=30)
    try:
        await imap.wait_hello_from_server()
        response = await imap.login(user, password)
        if response.result != "OK":
            raise RuntimeError(f"IMAP LOGIN failed: {response}")
        response = await imap.examine("INBOX")
        if response.result != "OK":
            raise RuntimeError(f"IMAP EXAMINE failed: {response}")
        await imap.logout()
    finally:
        if imap.protocol is not None and imap.protocol.transport is not None:
            imap.protocol.transport.close()


async def check(
    host: str, smtp_port: int, imap_port: int, user: str, password: str, context: ssl.SSLContext
) -> None:
    await asyncio.gather(
        smtp_sequence(host, smtp_port, user, password, context),
        imap_sequence(host, imap_port, user, password, context),
    )
