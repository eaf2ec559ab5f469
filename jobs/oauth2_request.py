"""The `oauth2` object of a request: a ready access token, or what it takes to fetch one.

Three ways in: an `access_token` used as it is; a `refresh_token` with its app's `client_id`
(and `client_secret` unless the app is a public client); or an app-only grant
(`client_credentials`, Microsoft; `service_account`, Google Workspace domain-wide delegation).
What needs the inbox type (the token endpoint and scopes by provider, the tenant rules) is
checked by `for_inbox_type` once the request knows it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from jobs.hosts import is_loopback_host
from jobs.presets import InboxType

# Real access tokens are 1.5-3 KB (Microsoft's can reach 4); far more is not a token.
MAX_TOKEN_CHARS = 16_384
# A Google service account key file is about 2.4 KB (a 2048-bit RSA key in PEM, plus names).
MAX_SERVICE_ACCOUNT_KEY_CHARS = 16_384
MAX_URL_CHARS = 2_048
MAX_SCOPES = 32
MAX_SCOPE_CHARS = 256
# Entra tenant ids (a GUID) and verified domain names; the tenant goes into the token URL's path.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,252}")
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,512}")
_SCOPE = re.compile(r"[\x21-\x7e]+")
# Microsoft's "any tenant" names: fine for a user's delegated sign-in, never for app-only tokens,
# which are issued by one tenant for its own mailboxes.
MULTI_TENANT = frozenset({"common", "organizations", "consumers"})

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
MICROSOFT_DEFAULT_TENANT = "common"
GOOGLE_SCOPES = ("https://mail.google.com/",)
# Delegated: one user's mailbox; offline_access keeps the refresh token coming.
MICROSOFT_USER_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
)
MICROSOFT_APP_SCOPES = ("https://outlook.office365.com/.default",)


class Grant(StrEnum):
    """How a token is fetched (none: the access token is used as it is)."""

    REFRESH_TOKEN = "refresh_token"
    CLIENT_CREDENTIALS = "client_credentials"
    SERVICE_ACCOUNT = "service_account"


def _problem(field: str, problem: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("field_problem", "{problem}", {"problem": problem}), loc=(field,), input=None
    )


def _raise(title: str, problems: list[InitErrorDetails]) -> None:
    # One error per bad field, each under its own name (oauth2.<field>), in one go.
    if problems:
        raise ValidationError.from_exception_data(title, problems)


def token_url_problem(url: str) -> str | None:
    """Why `url` cannot be a token endpoint, or None. https only: the request carries a refresh
    token or a client secret; plain http only to this machine (development, tests)."""
    if len(url) > MAX_URL_CHARS or any(c <= " " or c == "\x7f" for c in url):
        return f"must be a URL of at most {MAX_URL_CHARS} characters without spaces"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.username is not None or parts.password is not None or parts.fragment:
        return "must not carry a user name, password or fragment"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return "must be https:// (http:// only to a loopback address such as 127.0.0.1)"
    return None


def service_account_key_problem(text: str) -> str | None:
    """Why `text` is not a Google service account key (JSON with client_email and private_key).
    Never quotes the text."""
    try:
        key = json.loads(text)
    except (ValueError, RecursionError):
        return "is not JSON (give the service account's key file as it is)"
    if not isinstance(key, dict):
        return "must be the JSON object of a service account key file"
    missing = [
        name for name in ("client_email", "private_key") if not (isinstance(key.get(name), str) and key[name])
    ]
    if missing:
        return f"has no {' or '.join(missing)} (give the service account's key file as it is)"
    if "PRIVATE KEY-----" not in key["private_key"]:
        return "has a private_key that is not a PEM private key"
    return None


class OAuth2Credentials(BaseModel):
    """What an OAuth2 inbox signs in with. Every secret here is a SecretStr."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_token: SecretStr | None = Field(
        default=None, min_length=1, max_length=MAX_TOKEN_CHARS, description="A bearer token, used as it is."
    )
    refresh_token: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOKEN_CHARS,
        description="Fetch a fresh access token first.",
    )
    client_id: str | None = Field(default=None, max_length=512, description="The OAuth app's client id.")
    client_secret: SecretStr | None = Field(
        default=None, min_length=1, max_length=1024, description="Omitted for a public client."
    )
    grant: Grant | None = Field(
        default=None,
        description="refresh_token (default with a refresh_token), client_credentials or service_account.",
    )
    service_account_key: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SERVICE_ACCOUNT_KEY_CHARS,
        description="service_account: the service account's JSON key file, as text.",
    )
    token_url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        description="Defaults from the provider; required for CUSTOM_SMTP.",
    )
    scopes: list[str] | None = Field(
        default=None, max_length=MAX_SCOPES, description="Defaults per provider and grant."
    )
    tenant: str | None = Field(
        default=None, max_length=253, description="Microsoft: the tenant id or domain."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        grant = self.grant
        if grant is None and self.refresh_token is not None:
            grant = Grant.REFRESH_TOKEN
        problems = self._field_problems()
        problems += self._grant_problems(grant)
        _raise("OAuth2Credentials", problems)
        # The inferred grant is not marked as given: the payload and its digest keep what the
        # producer wrote.
        object.__setattr__(self, "grant", grant)
        return self

    def _field_problems(self) -> list[InitErrorDetails]:
        problems = []
        if self.client_id is not None and not _CLIENT_ID.fullmatch(self.client_id):
            problems.append(_problem("client_id", "must be printable ASCII without spaces"))
        if self.tenant is not None and not _TENANT.fullmatch(self.tenant):
            problems.append(_problem("tenant", "must be a tenant id or domain name"))
        if self.token_url is not None and (why := token_url_problem(self.token_url)) is not None:
            problems.append(_problem("token_url", why))
        if self.scopes is not None and (
            not self.scopes or any(len(s) > MAX_SCOPE_CHARS or not _SCOPE.fullmatch(s) for s in self.scopes)
        ):
            problems.append(_problem("scopes", "must be a non-empty list of scopes without spaces"))
        for name in ("access_token", "refresh_token", "client_secret"):
            value = getattr(self, name)
            if value is not None and any(c in value.get_secret_value() for c in "\r\n\x00\x01"):
                problems.append(_problem(name, "must not contain a line break, NUL or 0x01"))
        key = self.service_account_key
        if key is not None and (why := service_account_key_problem(key.get_secret_value())) is not None:
            problems.append(_problem("service_account_key", why))
        return problems

    def _grant_problems(self, grant: Grant | None) -> list[InitErrorDetails]:
        if grant is None:
            if self.access_token is None:
                return [_problem("access_token", "give an access_token, a refresh_token, or a grant")]
            return []
        needs: tuple[str, ...] = {
            Grant.REFRESH_TOKEN: ("refresh_token", "client_id"),
            Grant.CLIENT_CREDENTIALS: ("client_id", "client_secret"),
            Grant.SERVICE_ACCOUNT: ("service_account_key",),
        }[grant]
        problems = [
            _problem(name, f"is required with grant {grant.value}")
            for name in needs
            if getattr(self, name) is None
        ]
        extra = {
            Grant.REFRESH_TOKEN: ("service_account_key",),
            Grant.CLIENT_CREDENTIALS: ("refresh_token", "service_account_key"),
            Grant.SERVICE_ACCOUNT: ("refresh_token", "client_secret"),
        }[grant]
        problems += [
            _problem(name, f"is not used with grant {grant.value}")
            for name in extra
            if getattr(self, name) is not None
        ]
        if self.access_token is not None:
            problems.append(
                _problem("access_token", f"is fetched with grant {grant.value}: give one or the other")
            )
        return problems

    @property
    def fetches_token(self) -> bool:
        return self.grant is not None

    @property
    def app_id(self) -> str | None:
        """The OAuth app, for reports: the client id, or a service account's email."""
        if self.client_id is not None or self.service_account_key is None:
            return self.client_id
        return str(json.loads(self.service_account_key.get_secret_value())["client_email"])

    def secret_values(self) -> Iterable[str]:
        """Every secret, and the private key inside a service account key, for scrubbing."""
        for name in ("access_token", "refresh_token", "client_secret", "service_account_key"):
            value = getattr(self, name)
            if value is not None:
                yield value.get_secret_value()
        if self.service_account_key is not None:
            yield json.loads(self.service_account_key.get_secret_value())["private_key"]

    def for_inbox_type(self, inbox_type: InboxType) -> Self:
        """Checked against the provider, with its token endpoint and scopes filled in (not marked
        as given: the payload keeps what the producer wrote)."""
        if self.grant is None:
            return self
        problems = []
        grant = self.grant
        if grant is Grant.CLIENT_CREDENTIALS:
            if inbox_type is InboxType.GOOGLE_WORKSPACE:
                problems.append(
                    _problem(
                        "grant", "client_credentials is Microsoft's; Google Workspace uses service_account"
                    )
                )
            # Microsoft's endpoint is built from it; a custom endpoint names its own issuer.
            if self.tenant is None and inbox_type is InboxType.OUTLOOK_365:
                problems.append(
                    _problem(
                        "tenant", "is required with grant client_credentials (the tenant id, never common)"
                    )
                )
            elif self.tenant is not None and self.tenant.lower() in MULTI_TENANT:
                problems.append(
                    _problem(
                        "tenant",
                        "must be the tenant's own id or domain with grant client_credentials, "
                        f"not {self.tenant.lower()}",
                    )
                )
        if grant is Grant.SERVICE_ACCOUNT and inbox_type is InboxType.OUTLOOK_365:
            problems.append(
                _problem("grant", "service_account is Google's; Microsoft 365 uses client_credentials")
            )
        token_url, scopes = self.token_url, self.scopes
        if token_url is None:
            token_url = default_token_url(inbox_type, self.tenant)
            if token_url is None:
                problems.append(
                    _problem("token_url", f"is required for {inbox_type.value} when a token is fetched")
                )
        if scopes is None:
            scopes = list(default_scopes(inbox_type, grant))
        _raise("OAuth2Credentials", problems)
        filled = self.model_copy()
        object.__setattr__(filled, "token_url", token_url)
        object.__setattr__(filled, "scopes", scopes)
        return filled


def default_token_url(inbox_type: InboxType, tenant: str | None) -> str | None:
    if inbox_type is InboxType.GOOGLE_WORKSPACE:
        return GOOGLE_TOKEN_URL
    if inbox_type is InboxType.OUTLOOK_365:
        return MICROSOFT_TOKEN_URL.format(tenant=tenant or MICROSOFT_DEFAULT_TENANT)
    return None


def default_scopes(inbox_type: InboxType, grant: Grant) -> tuple[str, ...]:
    if inbox_type is InboxType.GOOGLE_WORKSPACE:
        return GOOGLE_SCOPES
    if inbox_type is InboxType.OUTLOOK_365:
        return MICROSOFT_APP_SCOPES if grant is Grant.CLIENT_CREDENTIALS else MICROSOFT_USER_SCOPES
    return ()
