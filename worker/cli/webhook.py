"""`inboxcheck webhook add|list|remove|enable|rotate-secret|test|replay`: manage the endpoints
that `inboxcheck webhooks` delivers to (worker.webhooks)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from worker.cli import client
from worker.cli.terminal_text import printable
from worker.messages import events
from worker.rechecks.settings import parse_duration
from worker.settings import Settings
from worker.webhooks import delivery
from worker.webhooks.delivery import Outcome
from worker.webhooks.dispatcher import add_endpoint, client_for, drain, ledger_for, policy_for
from worker.webhooks.endpoints import (
    EVENT_TYPES,
    UNUSABLE_SECRET,
    Endpoint,
    EndpointRegistry,
    WebhookError,
    check_url,
    parse_event_types,
    registry_for,
)
from worker.webhooks.signing import SigningSecret

TEST_EVENT_TYPE = "inboxcheck.webhook.test"
DEFAULT_KEEP_PREVIOUS = "1d"
# What the answer to a test POST would mean for an event.
TEST_VERDICTS = {
    Outcome.DELIVERED: "delivered",
    Outcome.RETRY: "not delivered (an event would be retried)",
    Outcome.FAILED: "not delivered (an event would not be retried)",
    Outcome.GONE: "not delivered (410 Gone: an event would disable the endpoint)",
}


async def _endpoint(registry: EndpointRegistry, endpoint_id: str, *, with_keys: bool = False) -> Endpoint:
    endpoint = await registry.get(endpoint_id, with_keys=with_keys)
    if endpoint is None:
        raise WebhookError(
            f"ID: no webhook endpoint {endpoint_id!r:.40}; `inboxcheck webhook list` shows them"
        )
    return endpoint


def _print_secret(endpoint: Endpoint, secret: SigningSecret, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**endpoint.as_dict(), "secret": secret.reveal()}))
        return
    print(f"{endpoint.id}  {endpoint.url}  events: {','.join(endpoint.events) or 'all'}")
    print(f"secret: {secret.reveal()}")
    print("(shown only now: give it to the receiver, which verifies each request's signature with it)")


async def _add(args: argparse.Namespace, settings: Settings, redis: Redis, registry: EndpointRegistry) -> int:
    endpoint, secret = await add_endpoint(redis, settings, args.url, args.events)
    _print_secret(endpoint, secret, args.json)
    return client.EXIT_VALID


async def _list(
    args: argparse.Namespace, settings: Settings, redis: Redis, registry: EndpointRegistry
) -> int:
    ledger = ledger_for(redis, settings)
    letters = [letter for _, letter in await ledger.dead_letters()]
    rows = []
    for endpoint in await registry.all():
        dead = sum(letter.endpoint_id == endpoint.id for letter in letters)
        rows.append({**endpoint.as_dict(), "queued": await ledger.queued(endpoint.id), "dead_letters": dead})
    if args.json:
        print(json.dumps(rows))
        return client.EXIT_VALID
    for row in rows:
        state = f"disabled ({row['disabled']})" if row["disabled"] else "active"
        events_text = ",".join(row["events"]) if isinstance(row["events"], list) else row["events"]
        print(
            printable(
                f"{row['id']}  {state}  events: {events_text}  queued: {row['queued']}  "
                f"dead letters: {row['dead_letters']}  {row['url']}"
            )
        )
    if not rows:
        print("no webhook endpoints; add one with `inboxcheck webhook add URL`")
    return client.EXIT_VALID


async def _remove(
    args: argparse.Namespace, settings: Settings, redis: Redis, registry: EndpointRegistry
) -> int:
    await _endpoint(registry, args.id)
    await registry.remove(args.id)
    dropped = await drain(ledger_for(redis, settings), args.id, None)
    print(f"removed {args.id} ({dropped} queued deliveries dropped)")
    return client.EXIT_VALID


async def _enable(
    args: argparse.Namespace, settings: Settings, redis: Redis, registry: EndpointRegistry
) -> int:
    await _endpoint(registry, args.id)
    await registry.enable(args.id)
    print(f"enabled {args.id}")
    return client.EXIT_VALID


async def _rotate(
    args: argparse.Namespace, settings: Settings, redis: Redis, registry: EndpointRegistry
) -> int:
    endpoint = await _endpoint(registry, args.id)
    secret = await registry.rotate(endpoint, args.keep_previous)
    _print_secret(endpoint, secret, args.json)
    if args.keep_previous > 0:
        print(f"the previous secret still signs too for {args.keep_previous:g} s", file=sys.stderr)
    return client.EXIT_VALID


def test_event(endpoint_id: str) -> bytes:
    """A CloudEvents envelope like the stream's, of a type no consumer acts on."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": events.SOURCE,
            "type": TEST_EVENT_TYPE,
            "time": datetime.now(UTC).isoformat(),
            "subject": endpoint_id,
            "datacontenttype": "application/json",
            "data": {"endpoint_id": endpoint_id, "sent_at": time.time()},
        },
        separators=(",", ":"),
    ).encode()


async def _test(
    args: argparse.Namespace, settings: Settings, redis: Redis, registry: EndpointRegistry
) -> int:
    endpoint = await _endpoint(registry, args.id, with_keys=True)
    if not endpoint.active:
        raise WebhookError(
            f"ID: {endpoint.id} is disabled ({endpoint.disabled}); `inboxcheck webhook enable` it first"
        )
    if not endpoint.keys:
        raise WebhookError(f"ID: {endpoint.id}: {UNUSABLE_SECRET}")
    body = test_event(endpoint.id)
    async with client_for(settings) as http:
        attempt = await delivery.post(http, endpoint, json.loads(body)["id"], body, settings.webhook_timeout)
    verdict = TEST_VERDICTS[attempt.outcome]
    print(printable(f"{endpoint.id}: {verdict}: {attempt.detail} in {attempt.seconds * 1000:.0f} ms"))
    return client.EXIT_VALID if attempt.outcome is Outcome.DELIVERED else client.EXIT_INVALID


async def _replay(
    args: argparse.Namespace, settings: Settings, redis: Redis, registry: EndpointRegistry
) -> int:
    if args.endpoint:
        await _endpoint(registry, args.endpoint)
    ledger = ledger_for(redis, settings)
    replayed = 0
    for raw, letter in await ledger.dead_letters():
        if args.endpoint and letter.endpoint_id != args.endpoint:
            continue
        endpoint = await registry.get(letter.endpoint_id)
        if endpoint is None or not endpoint.active:
            continue  # removed or disabled: kept, for after `webhook enable`
        await ledger.replay(raw, letter)
        replayed += 1
    print(f"replayed {replayed} dead letter(s); `inboxcheck webhooks` sends them")
    return client.EXIT_VALID


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    async with client.connect(settings) as redis:
        return int(await args.action(args, settings, redis, registry_for(redis, settings.secret_key)))


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action is _add:
        args.url = check_url(args.url, policy_for(settings))
        args.events = parse_event_types(args.events)
    return asyncio.run(_run(args, settings))


def _keep_previous(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("webhook", help="manage webhook endpoints (add, list, remove, test, replay)")
    actions = parser.add_subparsers(dest="webhook_command", required=True)

    add = actions.add_parser("add", help="add an endpoint; prints its signing secret once")
    add.add_argument("url", metavar="URL", help="https:// (http:// to loopback only)")
    add.add_argument(
        "--events", metavar="TYPE,...", help=f"event types to send (default: all): {', '.join(EVENT_TYPES)}"
    )
    add.add_argument("--json", action="store_true", help="one JSON object, the secret included")
    add.set_defaults(action=_add)

    listing = actions.add_parser("list", help="endpoints, their state, queued deliveries and dead letters")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(action=_list)

    for name, action, text in (
        ("remove", _remove, "remove an endpoint; what it still had queued is dropped"),
        ("enable", _enable, "send to a disabled endpoint again (after 410 Gone)"),
        ("test", _test, "POST a signed test event to an endpoint now and print what it answered"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id", metavar="ID")
        sub.set_defaults(action=action)

    rotate = actions.add_parser("rotate-secret", help="give an endpoint a new signing secret; prints it once")
    rotate.add_argument("id", metavar="ID")
    rotate.add_argument(
        "--keep-previous",
        type=_keep_previous,
        default=parse_duration(DEFAULT_KEEP_PREVIOUS),
        metavar="DURATION",
        help="the old secret also signs for this long, so receivers can switch "
        f"(default {DEFAULT_KEEP_PREVIOUS}; 0: not at all)",
    )
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(action=_rotate)

    replay = actions.add_parser("replay", help="queue the dead letters again (for active endpoints)")
    replay.add_argument("--endpoint", metavar="ID", help="only this endpoint's")
    replay.set_defaults(action=_replay)
    parser.set_defaults(handler=run)
