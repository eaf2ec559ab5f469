"""The reply table: what a server's refusal proves, one row per rule, first match wins.

A row matches on the stable parts of a reply, never whole lines: who runs the server (or any
provider), the protocol, the step it came at, the code (an SMTP reply code or an IMAP status,
as a regular expression), the enhanced status code and a key phrase. It says the reason, whether
the same request may succeed later, and whether the reply names how long to wait. `example` is a
reply of the kind as it was seen (`seen` says where); tests/jobs/test_reply_table.py serves each
row's example over a real socket and expects that row's verdict. Providers word the same
meaning differently, so most rows are for any provider, and the provider decides only the
advice (jobs.resolutions). Whatever matches no row keeps the step's own reason (a refused login
is INVALID_CREDENTIALS, a refused EXAMINE is MAILBOX_UNAVAILABLE, a BYE is CONNECTION_CLOSED).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from jobs.errors import Reason
from jobs.providers import Provider
from jobs.steps import Step

Protocol = Literal["smtp", "imap"]

# Key phrases, each shared by the SMTP and IMAP rows of its kind.
APP_PASSWORD = (
    r"app(lication)?[- ]specific password|app(lication)? password|password for (an )?external "
    r"application|parol prilozheniya"
)
WEB_LOGIN = (
    r"\[WEBALERT|web ?login required|(log|sign) ?in (via|through|with|using|to) (a |your )?web ?browser"
    r"|verify (your identity|it'?s you|your account)|confirm (your identity|it'?s you)|not a robot"
    r"|you are (a )?human|captcha|password (is )?too (simple|weak)|change your password"
    r"|suspicious|unusual (sign-?in|activity)"
)
TLS_FIRST = (
    r"STARTTLS|SSL/TLS|\bTLS\b.{0,40}\b(required|first)\b|encryption (is )?required"
    r"|without (SSL|TLS|encryption)|\[PRIVACYREQUIRED\]"
    r"|plaintext authentication (is )?(not allowed|disallowed)"
)
NO_AUTH_COMMAND = (
    r"command (unrecognized|not recognized)|unrecognized command|unknown command|not advertised"
    r"|not enabled|not implemented"
)
THROTTLE = (
    r"too many (failed |bad |invalid |unsuccessful )?(login|logon|sign-?in|authentication|auth) "
    r"?(attempts|failures|requests)?|throttl|rate[- ]?limit|login rate|too many logins"
)
TOO_MANY_CONNECTIONS = (
    r"too many (simultaneous |concurrent |open )?connections|maximum number of connections|connection limit"
)
ACCESS_RIGHTS = r"(no|not have|without) access rights to this service"


@dataclass(frozen=True, slots=True)
class ReplyRule:
    protocol: Protocol
    reason: Reason
    retryable: bool
    example: str  # SMTP: the reply lines; IMAP: untagged lines ("* ...") then the tagged tail
    seen: str
    provider: Provider | None = None  # None: any provider
    step: Step | None = None  # None: any step
    code: str | None = None  # SMTP reply code or IMAP status (NO, BAD, BYE), matched whole
    enhanced: str | None = None  # RFC 3463 enhanced status code, exact
    text: str | None = None  # searched in the reply text, case-insensitively
    backoff: bool = False  # the reply names its wait (Suggested Backoff Time)
    # Where the example is served when the rule holds at any step.
    example_step: Step | None = None
    _code: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _text: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = re.IGNORECASE | re.DOTALL
        object.__setattr__(self, "_code", re.compile(self.code, flags) if self.code else None)
        object.__setattr__(self, "_text", re.compile(self.text, flags) if self.text else None)

    @property
    def served_at(self) -> Step:
        return self.example_step or self.step or (Step.AUTH if self.protocol == "smtp" else Step.LOGIN)

    def matches(
        self,
        protocol: Protocol,
        step: Step,
        provider: Provider | None,
        code: str,
        enhanced: str | None,
        text: str,
    ) -> bool:
        return (
            self.protocol == protocol
            and (self.provider is None or self.provider is provider)
            and (self.step is None or self.step is step)
            and (self._code is None or self._code.fullmatch(code) is not None)
            and (self.enhanced is None or self.enhanced == enhanced)
            and (self._text is None or self._text.search(text) is not None)
        )


AUTH = Step.AUTH
LOGIN = Step.LOGIN
REFERENCE = "provider-replies.md"

RULES: tuple[ReplyRule, ...] = (
    # -- SMTP --------------------------------------------------------------------------------
    # Gmail's 5.7.9 means 2-Step Verification is on, whatever text follows; elsewhere 534 5.7.9
    # is RFC 4954's "mechanism too weak" (below).
    ReplyRule(
        protocol="smtp",
        reason=Reason.APP_PASSWORD_REQUIRED,
        retryable=False,
        provider=Provider.GOOGLE,
        step=AUTH,
        code="534",
        enhanced="5.7.9",
        example="534-5.7.9 Application-specific password required. Learn more at\n"
        "534 5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor",
        seen=f"Gmail ({REFERENCE}, Google)",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.SMTP_AUTH_DISABLED,
        retryable=False,
        step=AUTH,
        text=r"SmtpClientAuthentication is disabled",
        example="535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
        seen=f"Microsoft 365 ({REFERENCE}, Microsoft)",
    ),
    # The rest of 5.7.139 (basic authentication disabled, security defaults, "did not meet the
    # criteria"): the tenant's policy refuses password sign-in, however right the password.
    ReplyRule(
        protocol="smtp",
        reason=Reason.BASIC_AUTH_DISABLED,
        retryable=False,
        step=AUTH,
        enhanced="5.7.139",
        example="535 5.7.139 Authentication unsuccessful, the request did not meet the criteria to be "
        "authenticated successfully. Contact your administrator.",
        seen=f"Microsoft 365 ({REFERENCE}, more real replies)",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.BASIC_AUTH_DISABLED,
        retryable=False,
        step=AUTH,
        text=r"\b5\.7\.30\b|basic authentication is (not supported|disabled)",
        example="550 5.7.30 Basic authentication is not supported for Client Submission",
        seen="Exchange Online once password SMTP AUTH is retired for the tenant",
    ),
    # Yahoo says "too many bad attempts" but means the account needs an app password.
    ReplyRule(
        protocol="smtp",
        reason=Reason.APP_PASSWORD_REQUIRED,
        retryable=False,
        step=AUTH,
        text=r"#AUTH005",
        example="535 5.7.0 (#AUTH005) Too many bad auth attempts.",
        seen=f"Yahoo, AOL ({REFERENCE}, others)",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.APP_PASSWORD_REQUIRED,
        retryable=False,
        step=AUTH,
        text=APP_PASSWORD,
        example="535 5.7.0 NEOBHODIM parol prilozheniya https://help.mail.ru/mail/security/protection/external"
        " / Application password is REQUIRED",
        seen=f"Mail.ru ({REFERENCE}, more real replies)",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.WEB_LOGIN_REQUIRED,
        retryable=False,
        step=AUTH,
        text=WEB_LOGIN,
        example="534-5.7.14 <https://accounts.google.com/signin/continue?sarp=1&scc=1> Please log in via\n"
        "534 5.7.14 your web browser and then try again.",
        seen=f"Gmail ({REFERENCE}, more real replies); other providers ask to verify the account or "
        "prove a human signs in",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.SMTP_AUTH_DISABLED,
        retryable=False,
        step=AUTH,
        text=ACCESS_RIGHTS,
        example="535 5.7.8 Error: authentication failed: "
        "This user does not have access rights to this service",
        seen=f"Yandex with mail clients not allowed ({REFERENCE}, other kinds)",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.TLS_REQUIRED,
        retryable=False,
        enhanced="5.7.11",
        example="538 5.7.11 Encryption required for requested authentication mechanism",
        seen="RFC 4954 section 6",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.TLS_REQUIRED,
        retryable=False,
        code="53[08]",
        text=TLS_FIRST,
        example="530 5.7.0 Must issue a STARTTLS command first.",
        seen=f"Gmail, Postfix; Yandex's 530 5.7.7 ({REFERENCE}, more real replies)",
    ),
    # The server does not know AUTH at all, whatever code it says so with.
    ReplyRule(
        protocol="smtp",
        reason=Reason.AUTH_MECHANISM_UNSUPPORTED,
        retryable=False,
        step=AUTH,
        code="50[0-3]",
        text=NO_AUTH_COMMAND,
        example='500 5.5.1 Command unrecognized: "{command}"',
        seen=f"Sendmail without AUTH, echoing the command ({REFERENCE}, more real replies); Postfix "
        "'503 5.5.1 Error: authentication not enabled'; Exim '503 AUTH command used when not advertised'",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.AUTH_MECHANISM_UNSUPPORTED,
        retryable=False,
        step=AUTH,
        code="504",
        example="504 5.7.4 Unrecognized authentication type",
        seen="Exchange; RFC 4954: the mechanism is not supported",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.AUTH_MECHANISM_UNSUPPORTED,
        retryable=False,
        step=AUTH,
        text=r"(invalid|unrecognized|unsupported|unknown) authentication (mechanism|type)",
        example="535 5.7.8 Error: authentication failed: Invalid authentication mechanism",
        seen="Postfix (Dovecot SASL) asked for a mechanism it does not offer",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.AUTH_MECHANISM_UNSUPPORTED,
        retryable=False,
        step=AUTH,
        code="534",
        enhanced="5.7.9",
        example="534 5.7.9 Authentication mechanism is too weak",
        seen="RFC 4954 section 6 (any server but Gmail)",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.TOO_MANY_ATTEMPTS,
        retryable=True,
        text=THROTTLE,
        example="454 4.7.0 Too many login attempts, please try again later.",
        seen=f"Gmail ({REFERENCE}, Google)",
    ),
    # 454 4.7.0 is RFC 4954's temporary authentication failure: a throttle only when it says so.
    ReplyRule(
        protocol="smtp",
        reason=Reason.TEMPORARY_AUTH_FAILURE,
        retryable=True,
        step=AUTH,
        code="454",
        example="454 4.7.0 Cannot authenticate due to temporary system problem. Try again later.",
        seen=f"Gmail ({REFERENCE}, more real replies)",
    ),
    ReplyRule(
        protocol="smtp",
        reason=Reason.TEMPORARY_AUTH_FAILURE,
        retryable=True,
        step=AUTH,
        code=r"4\d\d",
        example="451 4.3.0 Temporary authentication failure, try again later",
        seen="any server whose password store is out of reach; RFC 5321: 4xx is transient",
    ),
    # -- IMAP --------------------------------------------------------------------------------
    ReplyRule(
        protocol="imap",
        reason=Reason.APP_PASSWORD_REQUIRED,
        retryable=False,
        step=LOGIN,
        code="NO|BAD",
        text=APP_PASSWORD,
        example="NO [ALERT] Application-specific password required: "
        "https://support.google.com/accounts/answer/185833 (Failure)",
        seen=f"Gmail ({REFERENCE}, Google)",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.WEB_LOGIN_REQUIRED,
        retryable=False,
        step=LOGIN,
        code="NO|BAD",
        text=WEB_LOGIN,
        example="* NO [WEBALERT https://accounts.google.com/signin/continue?sarp=1] Web login required.\n"
        "NO [ALERT] Please log in via your web browser: "
        "https://support.google.com/mail/accounts/answer/78754 "
        "(Failure)",
        seen=f"Gmail ({REFERENCE}, Google)",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.IMAP_DISABLED,
        retryable=False,
        step=LOGIN,
        code="NO|BAD",
        text=r"not enabled for IMAP use|IMAP access is disabled|IMAP (access )?(is )?(disabled|not enabled)",
        example="NO [ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page "
        "and enable your account for IMAP access. (Failure)",
        seen=f"Gmail; Workspace 'IMAP access is disabled for your domain' ({REFERENCE}, Google)",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.IMAP_DISABLED,
        retryable=False,
        code="NO|BAD",
        text=ACCESS_RIGHTS,
        example="NO [AUTHENTICATIONFAILED] LOGIN This user does not have access rights to this service",
        seen=f"Yandex with IMAP off for mail clients ({REFERENCE}, other kinds)",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.BASIC_AUTH_DISABLED,
        retryable=False,
        step=LOGIN,
        code="NO|BAD",
        text=r"basic authentication is disabled",
        example="NO Basic authentication is disabled.",
        seen=f"Microsoft 365 ({REFERENCE}, Microsoft)",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.TLS_REQUIRED,
        retryable=False,
        code="NO|BAD",
        text=TLS_FIRST,
        example="* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it "
        "anyway. If anyone was listening, the password was exposed.\n"
        "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
        seen=f"Dovecot with ssl=required behind plain IMAP ({REFERENCE}, what to fix, kind 5)",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.TOO_MANY_CONNECTIONS,
        retryable=True,
        text=TOO_MANY_CONNECTIONS,
        example="NO [ALERT] Too many simultaneous connections. (Failure)",
        seen=f"Gmail (15 per account); Dovecot's [UNAVAILABLE] Maximum number of connections ({REFERENCE})",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.TOO_MANY_ATTEMPTS,
        retryable=True,
        code="NO|BAD",
        text=THROTTLE,
        backoff=True,
        example="NO Request is throttled. Suggested Backoff Time: 299910 milliseconds",
        seen=f"Microsoft 365 at EXAMINE, after a successful LOGIN ({REFERENCE}, more real replies)",
        example_step=Step.EXAMINE,
    ),
    # Microsoft, on every command after a LOGIN it accepted: in practice a wrong password or a
    # user without an Exchange Online mailbox.
    ReplyRule(
        protocol="imap",
        reason=Reason.AUTHENTICATED_NOT_CONNECTED,
        retryable=False,
        code="NO|BAD",
        text=r"User is authenticated but not connected",
        example="BAD User is authenticated but not connected.",
        seen=f"Microsoft 365 ({REFERENCE}, other kinds)",
        example_step=Step.EXAMINE,
    ),
    # The server hung up and said why (a BYE with no tagged reply).
    ReplyRule(
        protocol="imap",
        reason=Reason.PROTOCOL_ERROR,
        retryable=False,
        code="BYE",
        text=r"too many (invalid|bad|unknown) (IMAP )?commands",
        example="* BYE Too many invalid IMAP commands.",
        seen=f"Dovecot ({REFERENCE}, more real replies)",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.CONNECTION_CLOSED,
        retryable=True,
        code="BYE",
        text=r"inactivity|idle for too long|autologout",
        example="* BYE Disconnected for inactivity.",
        seen="Dovecot; Courier and UW 'Autologout; idle for too long'",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.SERVICE_UNAVAILABLE,
        retryable=True,
        code="BYE",
        text=r"shutting down|shutdown|going down|restart|maintenance",
        example="* BYE Server shutting down.",
        seen="Dovecot on stop or reload",
    ),
    ReplyRule(
        protocol="imap",
        reason=Reason.TEMPORARY_AUTH_FAILURE,
        retryable=True,
        step=LOGIN,
        code="NO|BAD",
        text=r"\[UNAVAILABLE\]|\[INUSE\]|temporary",
        example="NO [UNAVAILABLE] Temporary authentication failure. [mx1:2026-12-03 11:00:00]",
        seen="Dovecot when its password database is out of reach",
    ),
)
