"""The validate-inbox request: the job payload producers send and the CLI reads."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jobs.errors import InboxcheckError
from jobs.oauth2_request import OAuth2Credentials
from jobs.presets import COLDSEND_NATIVE, PRESETS, SMTP_IMPLICIT_TLS_PORT, InboxType

Port = Annotated[int, Field(ge=1, le=65535)]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
# RFC 1123 names and IP literals; anything with spaces or control characters is a typo or an attack.
_HOST = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,253}")
# Names end up in protocol commands, logs and terminals: a control character is a typo or an attack.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A password is sent inside an IMAP quoted string or an SMTP AUTH line: a line break or NUL there
# would end the command and start another.
_LINE_BREAK_OR_NUL = re.compile(r"[\r\n\x00]")


class Security(StrEnum):
    """How a connection is protected: implicit TLS, a required STARTTLS upgrade, or nothing."""

    SSL = "ssl"
    STARTTLS = "starttls"
    NONE = "none"


class AuthMethod(StrEnum):
    """How the inbox signs in: a password (LOGIN, AUTH PLAIN/LOGIN) or an OAuth2 bearer token."""

    PASSWORD = "password"
    OAUTH2 = "oauth2"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    security: Security


class ValidationRequest(BaseModel):
    """One sender account to prove. Passwords and tokens are SecretStr so no repr or dump shows them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inbox_id: str | None = Field(default=None, max_length=256, description="Defaults to email.")
    inbox_type: InboxType
    email: str = Field(max_length=320)
    # Before the credentials: their validators read it.
    auth: AuthMethod = Field(default=AuthMethod.PASSWORD, description="password or oauth2: one per request.")
    # validate_default: a missing endpoint must be reported next to any other bad field.
    smtp_host: str | None = Field(default=None, validate_default=True)
    smtp_port: Port | None = Field(default=None, validate_default=True)
    smtp_use_tls: bool = True
    smtp_security: Security | None = Field(
        default=None,
        description="Overrides the port rule (465 implicit TLS, else STARTTLS).",
    )
    allow_insecure_auth: bool = Field(
        default=False, description="Allow SMTP AUTH without TLS when smtp_use_tls is false."
    )
    imap_host: str | None = Field(default=None, validate_default=True)
    imap_port: Port | None = Field(default=None, validate_default=True)
    imap_use_ssl: bool = True
    smtp_username: str | None = Field(default=None, max_length=320, description="Defaults to email.")
    # validate_default: a missing password (auth password) is reported like any other field.
    smtp_password: SecretStr | None = Field(
        default=None, min_length=1, max_length=1024, validate_default=True, description="With auth password."
    )
    imap_username: str | None = Field(default=None, max_length=320, description="Defaults to smtp_username.")
    imap_password: SecretStr | None = Field(
        default=None, min_length=1, max_length=1024, description="Defaults to smtp_password."
    )
    oauth2: OAuth2Credentials | None = Field(
        default=None, validate_default=True, description="With auth oauth2."
    )
    account_age_days: int | None = Field(default=None, ge=0, le=36_500)

    @field_validator("inbox_type", mode="before")
    @classmethod
    def _refuse_native(cls, value: Any) -> Any:
        if value == COLDSEND_NATIVE:
            raise ValueError(
                "COLDSEND_NATIVE inboxes are run by ColdSend and have no SMTP or IMAP login to check"
            )
        return value

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str) -> str:
        if not _EMAIL.fullmatch(value):
            raise ValueError("must be an email address such as name@example.com")
        return value

    @field_validator("inbox_id", "email", "smtp_username", "imap_username")
    @classmethod
    def _refuse_control_characters(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("smtp_password", "imap_password")
    @classmethod
    def _refuse_line_breaks(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _LINE_BREAK_OR_NUL.search(value.get_secret_value()):
            raise ValueError("must not contain a line break or NUL character")
        return value

    @field_validator("smtp_password", "imap_password", "oauth2")
    @classmethod
    def _one_way_to_sign_in(cls, value: Any, info: ValidationInfo) -> Any:
        auth, name = info.data.get("auth"), info.field_name
        if auth is AuthMethod.OAUTH2:
            if name == "oauth2" and value is None:
                raise ValueError("is required with auth oauth2")
            if name != "oauth2" and value is not None:
                raise ValueError("is refused with auth oauth2: one way to sign in per request")
        elif auth is AuthMethod.PASSWORD:
            if name == "smtp_password" and value is None:
                raise ValueError("is required")
            if name == "oauth2" and value is not None:
                raise ValueError('needs "auth": "oauth2"')
        return value

    @field_validator("smtp_host", "imap_host")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.fullmatch(value):
            raise ValueError("must be a host name or IP address without spaces")
        return value

    @field_validator("oauth2")
    @classmethod
    def _oauth2_for_provider(cls, value: OAuth2Credentials | None, info: ValidationInfo) -> Any:
        inbox_type = info.data.get("inbox_type")
        if value is None or inbox_type is None:
            return value
        return value.for_inbox_type(inbox_type)

    @field_validator("smtp_host", "smtp_port", "imap_host", "imap_port")
    @classmethod
    def _required_without_preset(cls, value: Any, info: ValidationInfo) -> Any:
        inbox_type = info.data.get("inbox_type")
        if (
            value is None
            and inbox_type is not None
            and getattr(PRESETS[inbox_type], info.field_name or "") is None
        ):
            raise ValueError(f"is required for {inbox_type.value}")
        return value

    @model_validator(mode="after")
    def _apply_preset(self) -> Self:
        preset = PRESETS[self.inbox_type]
        filled: dict[str, Any] = {
            name: getattr(preset, name)
            for name in ("smtp_host", "smtp_port", "imap_host", "imap_port")
            if getattr(self, name) is None
        }
        filled["inbox_id"] = self.inbox_id or self.email
        filled["smtp_username"] = self.smtp_username or self.email
        filled["imap_username"] = self.imap_username or filled["smtp_username"]
        filled["imap_password"] = self.imap_password or self.smtp_password
        # The model is frozen for its users; filling in defaults is part of building it.
        for name, value in filled.items():
            object.__setattr__(self, name, value)
        return self

    @property
    def smtp(self) -> Endpoint:
        assert self.smtp_host is not None and self.smtp_port is not None
        if self.smtp_security is not None:
            security = self.smtp_security
        elif not self.smtp_use_tls:
            security = Security.NONE
        elif self.smtp_port == SMTP_IMPLICIT_TLS_PORT:
            security = Security.SSL
        else:
            security = Security.STARTTLS
        return Endpoint(self.smtp_host, self.smtp_port, security)

    @property
    def imap(self) -> Endpoint:
        assert self.imap_host is not None and self.imap_port is not None
        return Endpoint(
            self.imap_host, self.imap_port, Security.SSL if self.imap_use_ssl else Security.STARTTLS
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret this request carries, for scrubbing server replies and errors."""
        values = {s.get_secret_value() for s in (self.smtp_password, self.imap_password) if s is not None}
        if self.oauth2 is not None:
            values.update(self.oauth2.secret_values())
        return tuple(values)

    def password(self, protocol: Literal["smtp", "imap"]) -> str:
        """The password to sign in to `protocol` with (auth password)."""
        # Looked up, not chosen with an `else`: a misspelt protocol fails instead of signing in
        # to IMAP with the SMTP password.
        secret = {"smtp": self.smtp_password, "imap": self.imap_password}[protocol]
        assert secret is not None, "auth password requests always carry one"
        return secret.get_secret_value()

    @property
    def access_token(self) -> str:
        """The bearer token (auth oauth2)."""
        token = self.oauth2.access_token if self.oauth2 is not None else None
        assert token is not None, "auth oauth2 requests carry one, given or fetched (jobs.token_step)"
        return token.get_secret_value()

    def with_access_token(self, token: str) -> ValidationRequest:
        """This request signing in with `token`, fetched by the token step."""
        assert self.oauth2 is not None
        oauth2 = self.oauth2.model_copy(update={"access_token": SecretStr(token)})
        return self.model_copy(update={"oauth2": oauth2})


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class RequestError(InboxcheckError, ValueError):
    """A request that cannot be used, with one problem per bad field. Never echoes input values."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("invalid request: " + "; ".join(str(p) for p in problems))


def _problems(error: ValidationError) -> list[FieldProblem]:
    problems = []
    # include_input=False: a bad password must not come back inside the message about it.
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "request"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a known field"
        elif item["type"] == "missing":
            message = "is required"
        problems.append(FieldProblem(field, message))
    return problems


def parse_request(raw: str | bytes | dict[str, Any]) -> ValidationRequest:
    """Validate a request given as JSON text or an already-decoded mapping."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            position = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
            raise RequestError([FieldProblem("request", f"is not valid JSON{position}")]) from None
    if not isinstance(raw, dict):
        raise RequestError([FieldProblem("request", "must be a JSON object")])
    try:
        return ValidationRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(_problems(exc)) from None
