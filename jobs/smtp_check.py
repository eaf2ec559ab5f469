"""The SMTP check: connect, greeting, EHLO, TLS (implicit or required STARTTLS), one AUTH, then
QUIT in the background (jobs.goodbyes)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiosmtplib
from aiosmtplib.auth import auth_plain_encode
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.typing import SMTPStatus

from jobs import net, sasl
from jobs.bounds import SMTP_REPLY_TOO_LONG
from jobs.errors import CheckError, Reason, Reply, check_error
from jobs.goodbyes import Goodbyes
from jobs.mode_probe import greeting_or_mismatch, settle_tls_drop
from jobs.options import GOODBYE_TIMEOUT_S, CheckOptions
from jobs.protocol_run import Findings, run_check, transport_error
from jobs.providers import Provider, identify
from jobs.redact import excerpt, scrub
from jobs.replies import classify_smtp_auth, enhanced_code, judge
from jobs.reply_text import capped
from jobs.request import AuthMethod, Endpoint, Security, ValidationRequest
from jobs.result import ProtocolResult
from jobs.sasl import token_refused
from jobs.steps import Step, StepLog, Translator
from jobs.tls import client_context, tls_info

# One mechanism only, the first of these the server offers: aiosmtplib's login() would try each
# offered mechanism in turn, and every wrong try counts towards the provider's lockout.
AUTH_PREFERENCE = ("plain", "login")

# How aiosmtplib introduces a line that is not an SMTP reply (its code is SMTPStatus.invalid_response).
_MALFORMED_PREFIX = "Malformed SMTP response line: "
# What aiosmtplib says when a reply passes its bounds (it stops reading it).
_TOO_LONG = "Response too long"


class _Smtp(aiosmtplib.SMTP):
    """aiosmtplib's client, saying when its connection is gone: the goodbye waits for that."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _on_connection_lost(self, protocol: SMTPProtocol) -> None:
        super()._on_connection_lost(protocol)
        if not self.lost.done():
            self.lost.set_result(None)


def _reply(exc: aiosmtplib.SMTPResponseException, secrets: tuple[str, ...]) -> Reply:
    # aiosmtplib lets through up to 32 KiB of reply (8 KiB a line), far more than the event keeps.
    text = capped(exc.message, secrets)
    return Reply(code=exc.code, enhanced_code=enhanced_code(text), text=text)


def _translator(where: str, secrets: tuple[str, ...], provider: Provider | None) -> Translator:
    def translate(exc: BaseException, step: Step) -> CheckError | None:
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == SMTPStatus.invalid_response:
            if exc.message == _TOO_LONG:
                return check_error(
                    Reason.PROTOCOL_ERROR,
                    f"{where}: {SMTP_REPLY_TOO_LONG} during {step}; the rest was not read",
                )
            # Not SMTP at all (an SSH banner, a database handshake, anything on the wrong port):
            # only a short, printable excerpt is kept, and no reply code (-1 is aiosmtplib's own).
            line = exc.message.removeprefix(_MALFORMED_PREFIX)
            reply = Reply(text=excerpt(scrub(line, secrets))) if line != exc.message else None
            return check_error(
                Reason.PROTOCOL_ERROR,
                f"{where} answered something that is not SMTP during {step}",
                reply=reply,
            )
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            reply = _reply(exc, secrets)
            reason, wait = judge("smtp", step, reply, Reason.SERVICE_UNAVAILABLE, provider)
            detail = f"{where} greeted with {exc.code} instead of 220"
            return check_error(reason, detail, reply=reply, retry_after_s=wait)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            reply = _reply(exc, secrets)
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                fallback, detail = Reason.INVALID_CREDENTIALS, f"{where} refused AUTH"
            elif step is Step.STARTTLS:
                fallback, detail = Reason.STARTTLS_UNAVAILABLE, f"{where} refused STARTTLS"
            else:
                fallback = Reason.SERVICE_UNAVAILABLE if exc.code == 421 else Reason.PROTOCOL_ERROR
                detail = f"{where} answered {exc.code} during {step}"
            reason, wait = judge("smtp", step, reply, fallback, provider)
            return check_error(reason, detail, reply=reply, retry_after_s=wait)
        if isinstance(exc, TimeoutError):
            if "ready message" in str(exc):
                return check_error(
                    Reason.NO_GREETING, f"{where} accepted the connection but sent no greeting"
                )
            return None  # the step's own timeout reason fits
        found = transport_error(exc, where, step)
        if (
            found is not None
            and found.reason is Reason.CONNECTION_CLOSED
            and isinstance(exc, aiosmtplib.SMTPServerDisconnected)
            and step is not Step.TLS
        ):
            # aiosmtplib's own words ("Unexpected EOF received") say less than the step does.
            found.detail = f"{where} closed the connection during {step}"
        return found

    return translate


async def check_smtp(
    request: ValidationRequest, options: CheckOptions, goodbyes: Goodbyes | None = None
) -> ProtocolResult:
    """The verdict once AUTH has answered; QUIT and the close go on in `goodbyes` (a group of
    its own when none is given), within GOODBYE_TIMEOUT_S."""
    endpoint = request.smtp
    host, port, security = endpoint.host, endpoint.port, endpoint.security
    where = f"SMTP server {host}:{port}"
    username = request.smtp_username or request.email
    # A server that echoes a rejected AUTH line echoes it encoded: the AUTH PLAIN blob, or the
    # SASL response holding the token. scrub() already covers a secret's own base64 (AUTH LOGIN).
    if request.auth is AuthMethod.OAUTH2:
        secrets = (*request.secrets, *sasl.responses(username, request.access_token, host, port))
    else:
        secrets = (*request.secrets, auth_plain_encode(username, request.password("smtp")).decode())
    provider = identify(request.inbox_type, [(host, port)])
    steps = StepLog(options.step_timeout, _translator(where, secrets, provider))
    context = client_context(options.ca_file)

    async def body(findings: Findings) -> None:
        sock: socket.socket | None = None
        smtp: _Smtp | None = None
        try:
            async with steps.step(Step.DNS):
                addresses = await net.resolve(host, port, options.pins, options.dns_servers)
            async with steps.step(Step.CONNECT):
                sock = await net.connect(addresses, where, options.destinations)
            smtp = _Smtp(
                hostname=host,
                sock=sock,
                use_tls=security is Security.SSL,
                start_tls=False,
                tls_context=context,
                timeout=options.step_timeout,
                local_hostname=options.ehlo_hostname,
            )
            sock = None  # aiosmtplib owns it now
            if security is Security.SSL:
                # aiosmtplib runs the handshake and reads the greeting in one call, each under
                # its own step_timeout, and says which one stalled; this outer limit is a backstop.
                try:
                    async with steps.step(Step.TLS, timeout=2 * options.step_timeout):
                        await smtp.connect()
                except CheckError as exc:
                    raise await settle_tls_drop(exc, addresses, where, options.destinations) from None
            else:
                async with steps.step(Step.GREETING):
                    await greeting_or_mismatch(smtp.connect(), addresses, host, where, options.destinations)
            async with steps.step(Step.EHLO):
                await smtp.ehlo()
            if security is Security.STARTTLS:
                async with steps.step(Step.STARTTLS):
                    if not smtp.supports_extension("starttls"):
                        raise check_error(
                            Reason.STARTTLS_UNAVAILABLE,
                            f"{where} does not offer STARTTLS; the password was not sent in clear",
                        )
                    await smtp.starttls(server_hostname=host, tls_context=context)
                async with steps.step(Step.EHLO_TLS):
                    await smtp.ehlo()
            findings.tls = tls_info(smtp.get_transport_info("ssl_object"))
            if security is Security.NONE and not request.allow_insecure_auth:
                raise check_error(
                    Reason.TLS_REQUIRED,
                    f"{where} was reached without TLS; AUTH was not attempted because "
                    "allow_insecure_auth is not set",
                    step=Step.AUTH,
                )
            async with steps.step(Step.AUTH):
                if request.auth is AuthMethod.OAUTH2:
                    await _authenticate_with_token(
                        smtp, username, request.access_token, endpoint, findings, where, secrets
                    )
                else:
                    await _authenticate(
                        smtp,
                        username,
                        request.password("smtp"),
                        findings,
                        where,
                        without_tls=security is Security.NONE,
                    )
            _see_off(smtp, goodbyes or Goodbyes(), min(options.step_timeout, GOODBYE_TIMEOUT_S))
            smtp = None  # the goodbye closes it
        finally:
            if smtp is not None:
                smtp.close()
            if sock is not None:
                sock.close()

    return await run_check("smtp", endpoint, options, secrets, steps, body)


def _see_off(smtp: _Smtp, goodbyes: Goodbyes, within_s: float) -> None:
    transport = smtp.transport  # quit() lets go of it when it closes
    if not isinstance(transport, asyncio.Transport):  # gone already
        smtp.close()
        return

    def abort() -> None:
        smtp.close()
        transport.abort()

    goodbyes.see_off("smtp", smtp.quit, smtp.lost, smtp.close, abort, within_s)


async def _authenticate(
    smtp: aiosmtplib.SMTP,
    username: str,
    password: str,
    findings: Findings,
    where: str,
    *,
    without_tls: bool,
) -> None:
    offered = smtp.server_auth_methods
    mechanism = next((m for m in AUTH_PREFERENCE if m in offered), None)
    if mechanism is None and without_tls and not offered and smtp.supports_extension("starttls"):
        # Most servers hold AUTH back until the session is encrypted: the fix is TLS, not a
        # mechanism.
        raise check_error(
            Reason.TLS_REQUIRED,
            f"{where} offers AUTH only after STARTTLS, and TLS is off for this inbox",
        )
    if mechanism is None:
        listed = " ".join(offered).upper() or "none"
        raise check_error(
            Reason.AUTH_MECHANISM_UNSUPPORTED,
            f"{where} offers no password mechanism this check uses (offered: {listed})",
        )
    findings.auth_mechanism = mechanism.upper()
    if mechanism == "plain":
        await smtp.auth_plain(username, password)
    else:
        await smtp.auth_login(username, password)


async def _authenticate_with_token(
    smtp: aiosmtplib.SMTP,
    username: str,
    token: str,
    endpoint: Endpoint,
    findings: Findings,
    where: str,
    secrets: tuple[str, ...],
) -> None:
    """One AUTH with the bearer token, as RFC 4954 and the providers want it: the response inline
    when the line stays within 512 octets, else on the line after the server's empty 334; an
    error challenge answered so the server gives its verdict, and its JSON kept as detail."""
    offered = {m.upper() for m in smtp.server_auth_methods}
    mechanism = sasl.required(offered, where)
    findings.auth_mechanism = mechanism.value
    # The same host and port as the secrets scrubbed from replies (sasl.responses) were made with.
    response = sasl.initial_response(mechanism, username, token, endpoint.host, endpoint.port)
    inline = f"AUTH {mechanism.value} {response}\r\n"
    if len(inline) <= sasl.SMTP_COMMAND_LIMIT:
        reply = await smtp.execute_command(b"AUTH", mechanism.value.encode(), response.encode())
    else:
        reply = await smtp.execute_command(b"AUTH", mechanism.value.encode())
        if reply.code == SMTPStatus.auth_continue and not reply.message.strip():
            reply = await smtp.execute_command(response.encode())
    challenge = None
    if reply.code == SMTPStatus.auth_continue:
        challenge = sasl.decode_challenge(reply.message)
        reply = await smtp.execute_command(sasl.abort_response(mechanism).encode())
    if reply.code != SMTPStatus.auth_successful:
        refused = _reply(aiosmtplib.SMTPAuthenticationError(reply.code, reply.message), secrets)
        reason = classify_smtp_auth(refused)
        raise check_error(reason, token_refused(where, challenge, reason), reply=refused)
