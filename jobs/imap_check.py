"""The IMAP check: connect over implicit TLS or required STARTTLS, LOGIN and EXAMINE INBOX in one
flight, then LOGOUT in the background (jobs.goodbyes)."""

from __future__ import annotations

import socket

from jobs import net, sasl
from jobs.errors import CheckError, Reason, Reply, check_error
from jobs.goodbyes import Goodbyes
from jobs.imap_session import GreetingRefused, ImapSession, ProtocolViolation, Response, ServerBye
from jobs.mode_probe import greeting_or_mismatch, settle_tls_drop
from jobs.options import GOODBYE_TIMEOUT_S, CheckOptions
from jobs.protocol_run import Findings, run_check, transport_error
from jobs.providers import Provider, identify
from jobs.redact import excerpt
from jobs.replies import classify_imap_login, judge, password_login_reason, suggested_backoff_s
from jobs.reply_text import text_of_lines
from jobs.request import AuthMethod, Security, ValidationRequest
from jobs.result import ProtocolResult
from jobs.steps import Step, StepLog, Translator
from jobs.tls import client_context, tls_info


def _reply(response: Response, secrets: tuple[str, ...]) -> Reply:
    return Reply(status=response.result, text=text_of_lines(response.lines, secrets))


def _translator(where: str, secrets: tuple[str, ...], provider: Provider | None) -> Translator:
    def translate(exc: BaseException, step: Step) -> CheckError | None:
        if isinstance(exc, GreetingRefused) and not exc.line.startswith(b"* "):
            # Not an IMAP response at all (an SSH banner, anything on the wrong port): only a
            # short, printable excerpt is kept, and it is a PROTOCOL_ERROR, not the retryable
            # SERVICE_UNAVAILABLE of an IMAP BYE.
            return check_error(
                Reason.PROTOCOL_ERROR,
                f"{where} greeted with something that is not IMAP",
                reply=Reply(text=excerpt(text_of_lines([exc.line], secrets))),
            )
        if isinstance(exc, GreetingRefused | ServerBye):
            # The BYE line says why the server hangs up: kept, and read like any other reply.
            reply = Reply(status="BYE", text=text_of_lines([exc.line], secrets))
            if isinstance(exc, GreetingRefused):
                fallback, detail = Reason.SERVICE_UNAVAILABLE, f"{where} refused the session in its greeting"
            else:
                fallback, detail = (
                    Reason.CONNECTION_CLOSED,
                    f"{where} ended the session with BYE during {step}",
                )
            reason, wait = judge("imap", step, reply, fallback, provider)
            return check_error(reason, detail, reply=reply, retry_after_s=wait)
        if isinstance(exc, ProtocolViolation):
            return check_error(Reason.PROTOCOL_ERROR, f"{where}: {exc} during {step}")
        found = transport_error(exc, where, step)
        if found is not None:
            if found.reason is Reason.CONNECTION_CLOSED and step is not Step.TLS:
                found.detail = f"{where} closed the connection during {step}"
            return found
        return None

    return translate


async def check_imap(
    request: ValidationRequest, options: CheckOptions, goodbyes: Goodbyes | None = None
) -> ProtocolResult:
    """The verdict once EXAMINE has answered; LOGOUT and the close go on in `goodbyes` (a group
    of its own when none is given), within GOODBYE_TIMEOUT_S."""
    endpoint = request.imap
    host, port, security = endpoint.host, endpoint.port, endpoint.security
    where = f"IMAP server {host}:{port}"
    username = request.imap_username or request.email
    secrets = request.secrets
    if request.auth is AuthMethod.OAUTH2:
        secrets = (*secrets, *sasl.responses(username, request.access_token, host, port))
    provider = identify(request.inbox_type, [(host, port)])
    steps = StepLog(options.step_timeout, _translator(where, secrets, provider))
    context = client_context(options.ca_file)

    async def body(findings: Findings) -> None:
        sock: socket.socket | None = None
        session: ImapSession | None = None
        try:
            async with steps.step(Step.DNS):
                addresses = await net.resolve(host, port, options.pins, options.dns_servers)
            async with steps.step(Step.CONNECT):
                sock = await net.connect(addresses, where, options.destinations)
            session = ImapSession()
            if security is Security.SSL:
                try:
                    async with steps.step(Step.TLS):
                        await session.open(sock, context, host)
                        sock = None
                except CheckError as exc:
                    raise await settle_tls_drop(exc, addresses, where, options.destinations) from None
                async with steps.step(Step.GREETING):
                    await session.greeting()
            else:
                await session.open(sock, None, host)
                sock = None
                async with steps.step(Step.GREETING):
                    await greeting_or_mismatch(
                        session.greeting(), addresses, host, where, options.destinations
                    )
                async with steps.step(Step.STARTTLS):
                    if "STARTTLS" not in session.capabilities:
                        raise check_error(
                            Reason.STARTTLS_UNAVAILABLE,
                            f"{where} does not offer STARTTLS; the password was not sent in clear",
                        )
                    response = await session.starttls(context, host)
                    if response.result != "OK":
                        raise check_error(
                            Reason.STARTTLS_UNAVAILABLE,
                            f"{where} refused STARTTLS",
                            reply=_reply(response, secrets),
                        )
            findings.tls = tls_info(session.ssl_object())
            async with steps.step(Step.LOGIN):
                if request.auth is AuthMethod.OAUTH2:
                    await _authenticate_with_token(
                        session, request, username, host, port, findings, where, secrets
                    )
                else:
                    await _login(
                        session, username, request.password("imap"), host, provider, findings, where, secrets
                    )
            async with steps.step(Step.EXAMINE):
                response = await session.examine("INBOX")
                if response.result != "OK":
                    # After a LOGIN that worked, a throttle or "not connected" is not a mailbox
                    # problem: the reply table says what it is.
                    reply = _reply(response, secrets)
                    reason, wait = judge("imap", Step.EXAMINE, reply, Reason.MAILBOX_UNAVAILABLE, provider)
                    raise check_error(
                        reason, f"{where} could not open INBOX", reply=reply, retry_after_s=wait
                    )
            session.see_off(goodbyes or Goodbyes(), min(options.step_timeout, GOODBYE_TIMEOUT_S))
            session = None  # the goodbye closes it
        finally:
            if session is not None:
                session.close()
            if sock is not None:
                sock.close()

    return await run_check("imap", endpoint, options, secrets, steps, body)


async def _login(
    session: ImapSession,
    username: str,
    password: str,
    host: str,
    provider: Provider | None,
    findings: Findings,
    where: str,
    secrets: tuple[str, ...],
) -> None:
    if "LOGINDISABLED" in session.capabilities:
        raise check_error(
            Reason.AUTH_MECHANISM_UNSUPPORTED,
            f"{where} advertises LOGINDISABLED even over TLS; the password was not sent",
        )
    findings.auth_mechanism = "LOGIN"
    # EXAMINE goes with it; its answer, read in the EXAMINE step, counts only if LOGIN's is OK.
    response = await session.login(username, password, then_examine="INBOX")
    if response.result != "OK":
        reply = _reply(response, secrets)
        reason, wait = judge("imap", Step.LOGIN, reply, Reason.INVALID_CREDENTIALS, provider)
        raise check_error(
            password_login_reason(reason, host), f"{where} refused LOGIN", reply=reply, retry_after_s=wait
        )


async def _authenticate_with_token(
    session: ImapSession,
    request: ValidationRequest,
    username: str,
    host: str,
    port: int,
    findings: Findings,
    where: str,
    secrets: tuple[str, ...],
) -> None:
    offered = {c.removeprefix("AUTH=") for c in session.capabilities if c.startswith("AUTH=")}
    mechanism = sasl.required(offered, where)
    # No EXAMINE in the same flight here: a refused token gets an error challenge ("+ ...") that
    # the client must answer, and the server would read a pipelined EXAMINE as that answer.
    findings.auth_mechanism = mechanism.value
    response, challenge = await session.authenticate(
        mechanism, sasl.initial_response(mechanism, username, request.access_token, host, port)
    )
    if response.result != "OK":
        reply = _reply(response, secrets)
        reason = classify_imap_login(reply)
        raise check_error(
            reason,
            sasl.token_refused(where, challenge, reason),
            reply=reply,
            retry_after_s=suggested_backoff_s(reply.text),
        )
