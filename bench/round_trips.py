"""Round trips per check, measured by time through the delay proxy, next to the protocols' floor.

    python -m bench.round_trips               # 100 ms RTT, 5 checks per protocol (~15 s)
    python -m bench.round_trips --rtt-ms 200 --n 10

Dovecot (implicit TLS) and aiosmtpd (STARTTLS, AUTH PLAIN) on loopback, each behind
bench/proxy.py run in this process with RTT/2 of delay each way, the handshake charged as on a
real link. Each protocol's check runs alone, one at a time; its round trips are the check's own
`duration_ms` (DNS to verdict; the host is an IP literal) divided by the RTT, so the CPU a check
spends shows as the fraction above a whole number. "until closed" adds the goodbye (QUIT or
LOGOUT and the close), which runs after the verdict (jobs.goodbyes).

The floor, counted from the protocols (TCP's handshake is 1 RTT, TLS 1.3's 1 RTT; the proxy
module says how each is charged):
  SMTP with STARTTLS, 7: connect, greeting, EHLO, STARTTLS, TLS handshake, EHLO again (RFC 3207
    4.2: the client must forget what it learnt before TLS), AUTH PLAIN with its initial response
    (RFC 4954). PIPELINING (RFC 2920) covers none of these: EHLO, STARTTLS and AUTH must each
    be the last command of a group.
  IMAP with implicit TLS, 4: connect, TLS handshake, greeting (sent after the handshake; it
    announces the capabilities), LOGIN and EXAMINE in one flight (RFC 3501 / 9051 5.5).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import proxy, servers  # noqa: E402
from jobs.time_units import MS_PER_S  # noqa: E402

FLOOR = {"smtp": 7, "imap": 4}
LABEL = {"smtp": "SMTP, STARTTLS", "imap": "IMAP, implicit TLS"}
DEFAULT_RTT_MS = 100.0
DEFAULT_N = 5


async def _drain_goodbyes() -> None:
    """Wait for the goodbyes left running after the verdict (none before jobs.goodbyes existed,
    so that this file also measures the code before it)."""
    try:
        from jobs import goodbyes
    except ImportError:
        return
    await goodbyes.drain()


async def measure(root: Path, rtt_ms: float, n: int) -> dict[str, dict[str, list[float]]]:
    """Per protocol: the verdict's and the closed connection's time, in round trips, n checks."""
    from jobs.imap_check import check_imap
    from jobs.request import parse_request
    from jobs.smtp_check import check_smtp
    from tests.servers.certs import PKI

    pki = PKI(root / "pki")
    procs: list[servers.Proc] = []
    listeners: list[asyncio.Server] = []
    try:
        mail, smtp_port, imap_port = servers.start_mail(root, pki)
        procs.extend(mail)
        delay_s = rtt_ms / 2 / MS_PER_S
        smtp_listener, smtp_via = await proxy.listen(delay_s, smtp_port)
        imap_listener, imap_via = await proxy.listen(delay_s, imap_port)
        listeners += [smtp_listener, imap_listener]
        request = parse_request(servers.mail_request(0, smtp_via, imap_via))
        options = servers.loopback_options(pki)
        checks: dict[str, Any] = {"smtp": check_smtp, "imap": check_imap}
        out: dict[str, dict[str, list[float]]] = {}
        for protocol, check in checks.items():
            verdicts, closed = [], []
            for i in range(n + 1):  # the first warms up (trust store, imports), uncounted
                started = time.perf_counter()
                result = await check(request, options)
                await _drain_goodbyes()
                until_closed_ms = (time.perf_counter() - started) * MS_PER_S
                if result.status != "ok":
                    raise RuntimeError(f"{protocol} check failed: {result.reason} {result.detail}")
                if i:
                    verdicts.append(result.duration_ms / rtt_ms)
                    closed.append(until_closed_ms / rtt_ms)
            out[protocol] = {"verdict": verdicts, "closed": closed}
        return out
    finally:
        for listener in listeners:
            listener.close()
        for proc in reversed(procs):
            proc.stop()


def report(figures: dict[str, dict[str, list[float]]], rtt_ms: float) -> None:
    n = len(next(iter(figures.values()))["verdict"])
    print(
        f"round trips per check, {rtt_ms:g} ms RTT through bench/proxy.py, one check at a time, "
        f"n={n} each (the check's duration / RTT, median; the fraction is CPU):"
    )
    print(f"  {'protocol':<22} {'to verdict':>10} {'floor':>6} {'until closed':>13}")
    for protocol, values in figures.items():
        verdict = statistics.median(values["verdict"])
        closed = statistics.median(values["closed"])
        mark = (
            "at the floor"
            if round(verdict) <= FLOOR[protocol]
            else f"{round(verdict) - FLOOR[protocol]} over"
        )
        print(f"  {LABEL[protocol]:<22} {verdict:>10.2f} {FLOOR[protocol]:>6} {closed:>13.2f}   {mark}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="round trips per check through the delay proxy (loopback only)")
    p.add_argument("--rtt-ms", type=float, default=DEFAULT_RTT_MS, help="round-trip time the proxy adds")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="checks per protocol")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="inboxcheck-rtt-"))
    try:
        figures = asyncio.run(measure(root, args.rtt_ms, args.n))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(figures, args.rtt_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
