"""--resolve changes only the address: TLS verifies the name (SNI and certificate), the name
names the provider, the destination policy judges the address. And the provider is known from
the host names and the inbox type, and carried in the result."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from jobs.destinations import DestinationPolicy
from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.pins import parse_pins
from jobs.presets import InboxType
from jobs.providers import Provider, identify, provider_of_host
from jobs.request import parse_request
from jobs.smtp_check import check_smtp
from jobs.steps import Step
from jobs.validate import validate_inbox
from tests.jobs.checks import LOOPBACK, options, request
from tests.jobs.served import ANY_HOST, PASSWORD, provider_cert, serve_reply
from tests.servers.certs import PKI, ServerCert, server_context
from tests.servers.fakes import FakeServer, ImapScript
from tests.servers.replies import ReplyAt
from tests.worker.event_samples import completed
from worker.messages import events

__all__ = ["provider_cert"]  # a fixture, used by name

FakeFactory = Callable[..., FakeServer]


# -- parsing ---------------------------------------------------------------------------------


def test_pins_parse_curls_syntax() -> None:
    pins = parse_pins(
        "IMAP.Gmail.com.:993:127.0.0.1, imap.gmail.com:993:[::1],[2001:db8::1]:25:10.0.0.1,"
        "imap.gmail.com:993:127.0.0.1"
    )
    assert dict(pins) == {
        ("imap.gmail.com", 993): ("127.0.0.1", "::1"),
        ("2001:db8::1", 25): ("10.0.0.1",),
    }


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("imap.gmail.com", "is not HOST:PORT:ADDRESS"),
        ("imap.gmail.com:993", "is not HOST:PORT:ADDRESS"),
        ("imap.gmail.com:imaps:127.0.0.1", "port must be a number"),
        ("imap.gmail.com:70000:127.0.0.1", "port must be a number"),
        ("imap.gmail.com:993:localhost", "address must be an IP address"),
    ],
)
def test_a_bad_pin_names_the_entry_and_the_problem(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_pins(entry)
    assert repr(entry) in str(caught.value)


# -- TLS verifies the name, not the address ------------------------------------------------------


async def test_a_pinned_name_is_what_tls_verifies_and_sends_as_sni(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    cert = pki.server_cert("gmail-imap", "imap.gmail.com")
    context = server_context(cert.cert_file, cert.key_file)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    server = fake_server(ImapScript(login_reply="OK Logged in"), ssl_context=context)
    pinned = options(ca_file, pins=parse_pins([f"imap.gmail.com:{server.port}:{LOOPBACK}"]))
    result = await check_imap(request(imap_host="imap.gmail.com", imap_port=server.port), pinned)
    assert result.status == "ok", result.detail
    assert result.host == "imap.gmail.com" and names == ["imap.gmail.com"]


async def test_a_pinned_name_the_certificate_does_not_cover_is_a_hostname_mismatch(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(ImapScript(login_reply="OK Logged in"), ssl_context=pki.valid.ssl_context)
    pinned = options(ca_file, pins=parse_pins([f"imap.gmail.com:{server.port}:{LOOPBACK}"]))
    result = await check_imap(request(imap_host="imap.gmail.com", imap_port=server.port), pinned)
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.HOSTNAME_MISMATCH)


async def test_a_pinned_address_is_judged_by_the_destination_policy(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = fake_server(ImapScript())
    # The worker's policy: public addresses only.
    worker_like = options(
        ca_file,
        pins=parse_pins([f"imap.gmail.com:{server.port}:{LOOPBACK}"]),
        destinations=DestinationPolicy(),
    )
    result = await check_smtp(request(smtp_host="imap.gmail.com", smtp_port=server.port), worker_like)
    assert result.reason is Reason.DESTINATION_REFUSED and server.connections == 0


# -- the provider decides what a provider-specific reply means -----------------------------------


async def test_login_failed_means_no_passwords_only_at_microsofts_host(
    fake_server: FakeFactory, provider_cert: ServerCert, ca_file: str
) -> None:
    verdicts = {}
    for host in ("outlook.office365.com", ANY_HOST):
        result, _ = await serve_reply(
            fake_server, provider_cert, ca_file, "imap", Step.LOGIN, "NO LOGIN failed.", host
        )
        verdicts[host] = result.reason
    assert verdicts == {
        "outlook.office365.com": Reason.BASIC_AUTH_DISABLED,
        ANY_HOST: Reason.INVALID_CREDENTIALS,
    }


async def test_a_bare_534_5_7_9_is_an_app_password_only_at_gmail(
    fake_server: FakeFactory, provider_cert: ServerCert, ca_file: str
) -> None:
    reply = "534 5.7.9 Please use a stronger mechanism"
    verdicts = {}
    for host in ("smtp.gmail.com", ANY_HOST):
        result, _ = await serve_reply(fake_server, provider_cert, ca_file, "smtp", Step.AUTH, reply, host)
        verdicts[host] = result.reason
    assert verdicts == {
        "smtp.gmail.com": Reason.APP_PASSWORD_REQUIRED,
        ANY_HOST: Reason.AUTH_MECHANISM_UNSUPPORTED,
    }


# -- the provider in the result and the event ----------------------------------------------------


async def test_the_result_and_its_event_name_the_provider_and_its_fix(
    fake_server: FakeFactory, provider_cert: ServerCert, ca_file: str
) -> None:
    smtp = fake_server(
        ReplyAt("smtp", Step.AUTH, "235 2.7.0 Accepted"), ssl_context=provider_cert.ssl_context
    )
    imap = fake_server(
        ReplyAt("imap", Step.LOGIN, "NO [AUTHENTICATIONFAILED] Authentication failed"),
        ssl_context=provider_cert.ssl_context,
    )
    raw = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@icloud.com",
        "smtp_password": PASSWORD,
        "smtp_host": "smtp.mail.me.com",
        "smtp_port": smtp.port,
        "smtp_security": "ssl",
        "imap_host": "imap.mail.me.com",
        "imap_port": imap.port,
    }
    pins = parse_pins(
        [f"smtp.mail.me.com:{smtp.port}:{LOOPBACK}", f"imap.mail.me.com:{imap.port}:{LOOPBACK}"]
    )
    result = await validate_inbox(parse_request(raw), options(ca_file, pins=pins))
    assert (result.smtp.status, result.reason, result.provider) == (
        "ok",
        Reason.INVALID_CREDENTIALS,
        Provider.ICLOUD,
    )
    assert "app-specific password" in (result.resolution or "")
    data = events.completed(result).model_dump(mode="json")["data"]
    assert (data["provider"], data["reason"]) == ("ICLOUD", "INVALID_CREDENTIALS")


def test_an_event_without_a_provider_still_parses() -> None:
    """The field is additive: events written before it read back, as None."""
    written = completed().model_dump(mode="json")
    del written["data"]["provider"]
    event = events.parse_event(json.dumps(written))
    assert isinstance(event, events.CompletedEvent) and event.data.provider is None


@pytest.mark.parametrize(
    ("host", "port", "provider"),
    [
        ("smtp.gmail.com", 587, Provider.GOOGLE),
        ("SMTP.Office365.COM.", 587, Provider.MICROSOFT),
        ("imap.mail.yahoo.com", 993, Provider.YAHOO),
        ("imap.aol.com", 993, Provider.YAHOO),
        ("imap.mail.me.com", 993, Provider.ICLOUD),
        ("imappro.zoho.eu", 993, Provider.ZOHO),
        ("imap.fastmail.com", 993, Provider.FASTMAIL),
        ("mail.gmx.net", 587, Provider.GMX),
        ("imap.web.de", 993, Provider.WEB_DE),
        ("imap.ionos.de", 993, Provider.IONOS),
        ("imap.yandex.ru", 993, Provider.YANDEX),
        ("smtp.mail.ru", 465, Provider.MAIL_RU),
        ("127.0.0.1", 1143, Provider.PROTON),
        ("localhost", 1025, Provider.PROTON),
        ("secure.emailsrvr.com", 993, Provider.RACKSPACE),
        ("smtpout.secureserver.net", 465, Provider.GODADDY),
        ("127.0.0.1", 993, None),
        ("notgmail.com", 993, None),
        ("mail.example.net", 993, None),
    ],
)
def test_providers_are_told_from_host_names(host: str, port: int, provider: Provider | None) -> None:
    assert provider_of_host(host, port) is provider


def test_the_hosts_win_over_the_inbox_type_which_fills_in() -> None:
    assert identify(InboxType.GOOGLE_WORKSPACE, [("mail.example.net", 993)]) is Provider.GOOGLE
    assert identify(InboxType.GOOGLE_WORKSPACE, [("imap.mail.me.com", 993)]) is Provider.ICLOUD
    assert identify(InboxType.CUSTOM_SMTP, [("mail.example.net", 993)]) is None
