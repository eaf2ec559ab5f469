"""Signed webhooks: the events stream POSTed to HTTP endpoints (the `inboxcheck webhooks` process).

`endpoints` (the registry in Redis, secrets sealed), `signing` (Standard Webhooks), `transport`
(where an endpoint may be reached), `delivery` (one POST and what its answer means), `ledger` (the
deliveries' state in Redis, which survives restarts), `dispatcher` (the stream as a consumer
group, one runner per endpoint), `process` (reconnects, signals, metrics).
"""
