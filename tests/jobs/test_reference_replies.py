"""The real replies of provider-replies.md, each served under its provider's host name over a
real socket, get the reason an expert gives, and the advice names the provider's fix."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.errors import Reason
from jobs.presets import InboxType
from jobs.providers import Provider, identify
from jobs.resolutions import resolution
from jobs.steps import Step
from tests.jobs.served import PASSWORD, provider_cert, provider_host, serve_reply
from tests.servers.certs import ServerCert
from tests.servers.fakes import FakeServer

__all__ = ["provider_cert"]  # a fixture, used by name

G, M, Y, Z, A, F, D = (
    Provider.GOOGLE,
    Provider.MICROSOFT,
    Provider.YAHOO,
    Provider.ZOHO,
    Provider.ICLOUD,  # A: Apple
    Provider.FASTMAIL,
    None,  # Dovecot, Sendmail: any provider
)
AUTH, LOGIN, EXAMINE = Step.AUTH, Step.LOGIN, Step.EXAMINE

# (provider, protocol, step, reply as served, the expert's reason): every example of the
# reference, its first tables and its newest section.
REFERENCE: list[tuple[Provider | None, str, Step, str, Reason]] = [
    (
        G,
        "smtp",
        AUTH,
        "534-5.7.9 Application-specific password required. Learn more at\n534 5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor",
        Reason.APP_PASSWORD_REQUIRED,
    ),
    (
        G,
        "smtp",
        AUTH,
        "535-5.7.8 Username and Password not accepted. Learn more at\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials",
        Reason.INVALID_CREDENTIALS,
    ),
    (G, "smtp", AUTH, "454 4.7.0 Too many login attempts, please try again later.", Reason.TOO_MANY_ATTEMPTS),
    (G, "imap", LOGIN, "NO [ALERT] Application-specific password required", Reason.APP_PASSWORD_REQUIRED),
    (G, "imap", LOGIN, "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)", Reason.INVALID_CREDENTIALS),
    (G, "imap", LOGIN, "NO [ALERT] Please log in via your web browser", Reason.WEB_LOGIN_REQUIRED),
    (
        G,
        "imap",
        LOGIN,
        "NO [WEBALERT https://accounts.google.com/x] Web login required",
        Reason.WEB_LOGIN_REQUIRED,
    ),
    (G, "imap", LOGIN, "NO [ALERT] Your account is not enabled for IMAP use", Reason.IMAP_DISABLED),
    (G, "imap", LOGIN, "NO [ALERT] IMAP access is disabled for your domain", Reason.IMAP_DISABLED),
    (
        G,
        "imap",
        LOGIN,
        "NO [ALERT] Too many simultaneous connections. (Failure)",
        Reason.TOO_MANY_CONNECTIONS,
    ),
    (
        M,
        "smtp",
        AUTH,
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant",
        Reason.SMTP_AUTH_DISABLED,
    ),
    (
        M,
        "smtp",
        AUTH,
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled",
        Reason.BASIC_AUTH_DISABLED,
    ),
    (M, "smtp", AUTH, "535 5.7.3 Authentication unsuccessful", Reason.INVALID_CREDENTIALS),
    # Microsoft refuses every password LOGIN at its IMAP host (jobs.replies.password_login_reason).
    (M, "imap", LOGIN, "NO LOGIN failed.", Reason.BASIC_AUTH_DISABLED),
    (M, "imap", LOGIN, "NO Basic authentication is disabled.", Reason.BASIC_AUTH_DISABLED),
    (
        M,
        "imap",
        LOGIN,
        "BAD Request is throttled. Suggested Backoff Time: 1500 milliseconds",
        Reason.TOO_MANY_ATTEMPTS,
    ),
    (Y, "smtp", AUTH, "535 5.7.0 (#AUTH005) Too many bad auth attempts.", Reason.APP_PASSWORD_REQUIRED),
    (Y, "imap", LOGIN, "NO [AUTHENTICATIONFAILED] LOGIN Invalid credentials", Reason.INVALID_CREDENTIALS),
    (Z, "smtp", AUTH, "535 Authentication Failed", Reason.INVALID_CREDENTIALS),
    (A, "imap", LOGIN, "NO [AUTHENTICATIONFAILED] Authentication failed", Reason.INVALID_CREDENTIALS),
    (F, "imap", LOGIN, "NO Incorrect username or password.", Reason.INVALID_CREDENTIALS),
    (
        D,
        "imap",
        LOGIN,
        "NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
        Reason.TOO_MANY_CONNECTIONS,
    ),
    # The newest section: one real example of each kind the classifier used to get wrong.
    (
        G,
        "smtp",
        AUTH,
        "454 4.7.0 Cannot authenticate due to temporary system problem. Try again later.",
        Reason.TEMPORARY_AUTH_FAILURE,
    ),
    (
        G,
        "smtp",
        AUTH,
        "534-5.7.14 <https://accounts.google.com/signin/continue?x> Please log in via your web browser and\n534 5.7.14 then try again.",
        Reason.WEB_LOGIN_REQUIRED,
    ),
    (
        Provider.MAIL_RU,
        "smtp",
        AUTH,
        "535 5.7.0 NEOBHODIM parol prilozheniya https://help.mail.ru/mail/ / Application password is REQUIRED",
        Reason.APP_PASSWORD_REQUIRED,
    ),
    (
        M,
        "smtp",
        AUTH,
        "535 5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully. Contact your administrator.",
        Reason.BASIC_AUTH_DISABLED,
    ),
    (
        Provider.YANDEX,
        "smtp",
        AUTH,
        "530 5.7.7 Email sending without SSL/TLS encryption is not allowed. Please see: http://help.yandex.ru/",
        Reason.TLS_REQUIRED,
    ),
    (D, "smtp", AUTH, '500 5.5.1 Command unrecognized: "{command}"', Reason.AUTH_MECHANISM_UNSUPPORTED),
    (
        M,
        "imap",
        EXAMINE,
        "NO Request is throttled. Suggested Backoff Time: 299910 milliseconds",
        Reason.TOO_MANY_ATTEMPTS,
    ),
    (D, "imap", LOGIN, "* BYE Too many invalid IMAP commands.", Reason.PROTOCOL_ERROR),
]


@pytest.mark.parametrize(("provider", "protocol", "step", "reply", "reason"), REFERENCE)
async def test_each_reference_reply_gets_the_experts_reason(
    fake_server: Callable[..., FakeServer],
    provider_cert: ServerCert,
    ca_file: str,
    provider: Provider | None,
    protocol: str,
    step: Step,
    reply: str,
    reason: Reason,
) -> None:
    host = provider_host(provider, protocol)
    result, _ = await serve_reply(fake_server, provider_cert, ca_file, protocol, step, reply, host)
    assert (result.reason, result.failed_step) == (reason, step)
    assert PASSWORD not in result.model_dump_json()  # Sendmail echoes the AUTH PLAIN line


def test_the_reference_has_one_row_per_example() -> None:
    assert len(REFERENCE) == len({(p, proto, reply) for p, proto, _, reply, _ in REFERENCE})


# A generic "wrong password" at these providers means a cause only they have: the reason stays
# what the reply proves, the advice names the fix.
GENERIC = "NO [AUTHENTICATIONFAILED] Authentication failed."


@pytest.mark.parametrize(
    ("provider", "advice"),
    [
        (Provider.ICLOUD, "app-specific password"),
        (Provider.YAHOO, "app password"),
        (Provider.FASTMAIL, "app password"),
        (Provider.GMX, "POP3 & IMAP"),
        (Provider.WEB_DE, "POP3/IMAP"),
        (Provider.ZOHO, "IMAP Access"),
        (Provider.YANDEX, "mail clients"),
        (Provider.MAIL_RU, "external applications"),
        (Provider.PROTON, "Bridge"),
    ],
)
async def test_a_generic_refusal_gets_the_providers_advice(
    fake_server: Callable[..., FakeServer],
    provider_cert: ServerCert,
    ca_file: str,
    provider: Provider,
    advice: str,
) -> None:
    host = provider_host(provider, "imap")
    result, _ = await serve_reply(fake_server, provider_cert, ca_file, "imap", LOGIN, GENERIC, host)
    assert result.reason is Reason.INVALID_CREDENTIALS
    # A CUSTOM_SMTP inbox: the host name alone names the provider.
    found = identify(InboxType.CUSTOM_SMTP, [(result.host, result.port)])
    assert found is provider
    assert advice in resolution(result.reason, found)
    assert resolution(result.reason, found) != resolution(result.reason)


def test_a_provider_without_its_own_advice_for_a_reason_gets_the_general_advice() -> None:
    assert resolution(Reason.CONNECTION_REFUSED, Provider.GOOGLE) == resolution(Reason.CONNECTION_REFUSED)
