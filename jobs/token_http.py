"""The OAuth2 token request: a form POST to a token endpoint.

httpx does the HTTP; jobs.http_client connects through jobs.net, so the token endpoint gets the same
destination policy (judged on each resolved address) and the same DNS and connect errors as the
mail servers. No redirects, no proxies or .netrc from the environment, no compression, and the
answer is read in chunks up to MAX_RESPONSE_BYTES: a token answer is a few KB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs import http_client
from jobs.errors import Reason, check_error
from jobs.options import CheckOptions

# A token answer is 2-5 KB (a Microsoft one with a refresh token); far more is not one.
MAX_RESPONSE_BYTES = 64 * 1024
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "inboxcheck"}


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    retry_after: str | None
    body: bytes = field(repr=False)  # a token answer: the access and refresh tokens


async def post_form(url: str, form: dict[str, str], where: str, options: CheckOptions) -> HttpAnswer:
    """POST `form` to `url` and read the answer, at most MAX_RESPONSE_BYTES of it. The caller
    bounds the time (the token step's limit)."""
    async with (
        http_client.client(options, where=where) as client,
        client.stream("POST", url, data=form, headers=_HEADERS) as response,
    ):
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise _too_long(where)
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise _too_long(where)
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            body.clear()  # not asked for, and not decoded: no JSON in it
        return HttpAnswer(response.status_code, response.headers.get("retry-after"), bytes(body))


def _too_long(where: str) -> Exception:
    return check_error(
        Reason.PROTOCOL_ERROR, f"{where} answered more than {MAX_RESPONSE_BYTES} bytes; the rest was not read"
    )
