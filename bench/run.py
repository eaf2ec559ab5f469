"""inboxcheck benchmark: one command, local servers on loopback, a table and the targets.

    python -m bench.run             # defaults: N=1000, C=100; delays 50/100 ms RTT at C=200; memory at C=500
    python -m bench.run --quick     # seconds-long smoke version (CI)
    python -m bench.run --hostile   # a worker with every slot on hostile servers: peak RSS, good jobs' pace
    python -m bench.run --soak 600  # ten minutes of mixed jobs: the worker's RSS and open fds over time
    python -m bench.run --help      # every knob

Scenarios (each runs in its own process, so CPU seconds and peak RSS are its own):
  raw      the same SMTP+IMAP sequences, same libraries, one asyncio.gather at concurrency C
  inproc   inboxcheck's validate_inbox() at concurrency C
  e2e      N jobs enqueued through the producer, one arq worker with max_jobs=C, until N events
           are on the stream (worker's CPU and VmHWM read from /proc/<pid>)
  naive    smtplib + imaplib, sequential, on a sample, extrapolated to N
  arq-noop N empty arq jobs under the same worker settings (the queue's own ceiling)
Every server (Dovecot IMAPS, aiosmtpd SMTP+STARTTLS+AUTH, redis, the delay proxy) listens on
127.0.0.1 only. "srv ms/chk" is the CPU the rest of the machine (servers, proxy, redis) spent
per check, from /proc/stat, so the split of the two cores is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Below the path set-up above, so `python bench/run.py` finds the project too.
from bench import servers  # noqa: E402
from jobs.time_units import MS_PER_S  # noqa: E402
from tests.servers.certs import PKI  # noqa: E402
from tests.servers.ports import free_port  # noqa: E402
from tests.servers.wait import wait_until  # noqa: E402

# Per-in-flight-check memory target and the other ratios from issue 5.
TARGET_E2E_VS_RAW = 0.9
TARGET_CPU_VS_RAW = 1.25
TARGET_LATENCY_VS_IDEAL = 1.2
TARGET_E2E_VS_NAIVE = 100
TARGET_KB_PER_CHECK = 150
SCENARIO_TIMEOUT_S = 600


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent not idle (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="inboxcheck-bench-"))
        os.chmod(self.root, 0o755)
        self.procs: list[servers.Proc] = []
        self.rows: list[dict] = []

    # -- servers ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.pki = PKI(self.root / "pki")
        dovecot, self.imap_port = servers.start_dovecot(
            self.root / "dovecot", self.pki, max(self.args.c, self.args.latency_c, self.args.mem_c)
        )
        self.procs.append(dovecot)
        smtpd, self.smtp_port = servers.start_smtpd(self.root / "smtpd", self.pki, self.args.smtpd_procs)
        self.procs.extend(smtpd)
        self.redis_port = None
        if not self.args.no_e2e:
            try:
                redis, self.redis_port = servers.start_redis(self.root / "redis")
                self.procs.append(redis)
            except RuntimeError as exc:
                print(f"! no redis, skipping end-to-end scenarios: {exc}", file=sys.stderr)

    def proxy(self, rtt_ms: float) -> tuple[servers.Proc, int, int]:
        smtp_listen, imap_listen = free_port(), free_port()
        log = self.root / f"proxy-{rtt_ms:g}.log"
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.proxy",
                "--delay-ms",
                str(rtt_ms / 2),
                "--map",
                f"{smtp_listen}:{self.smtp_port}",
                "--map",
                f"{imap_listen}:{self.imap_port}",
            ],
            cwd=ROOT,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
        )
        proc = servers.Proc(f"proxy{rtt_ms:g}", popen, log)

        def probe() -> bool:
            if popen.poll() is not None:
                raise RuntimeError("proxy exited:\n" + log.read_text()[-2000:])
            return "ready" in log.read_text()

        wait_until(probe, timeout=10, what="delay proxy")
        return proc, smtp_listen, imap_listen

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- scenarios -------------------------------------------------------------------------------
    def scenario(
        self,
        kind: str,
        n: int,
        c: int,
        rtt: float,
        ports: tuple[int, int],
        *,
        label: str = "",
        loop: str | None = None,
        ssl_max_size: int | None = None,
        record: bool = True,
    ) -> dict:
        loop = loop or self.args.loop
        ssl_max_size = self.args.ssl_max_size if ssl_max_size is None else ssl_max_size
        cmd = [
            sys.executable,
            "-m",
            "bench.scenario",
            "--kind",
            kind,
            "--n",
            str(n),
            "--c",
            str(c),
            "--smtp-port",
            str(ports[0]),
            "--imap-port",
            str(ports[1]),
            "--ca",
            str(self.pki.ca_file),
            "--loop",
            loop,
            "--ssl-max-size",
            str(ssl_max_size or 0),
        ]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
        if out.returncode != 0 or not out.stdout.strip():
            raise RuntimeError(f"scenario {kind} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return self.add(result, label or kind, rtt, result.get("machine_busy_s"), record)

    def add(self, result: dict, label: str, rtt: float, busy: float | None, record: bool = True) -> dict:
        n = result["n"]
        result["label"] = label
        result["rtt_ms"] = rtt
        result["rate"] = n / result["wall_s"]
        result["cpu_ms"] = MS_PER_S * result["cpu_s"] / n if result.get("cpu_s") is not None else None
        result["srv_ms"] = (
            (MS_PER_S * max(0.0, busy - (result.get("cpu_s") or 0)) / n) if busy is not None else None
        )
        inflight = result.get("peak_inflight") or 1
        if result.get("rss_peak_kb") is not None:
            result["kb_per_check"] = (result["rss_peak_kb"] - result["rss_base_kb"]) / inflight
        result["fails"] = sum(result.get("failures", {}).values())
        if result["fails"]:
            print(
                f"! {label} @ {rtt:g} ms: {result['fails']} failed checks: {result['failures']}",
                file=sys.stderr,
            )
        if record:
            self.rows.append(result)
        print(
            f"  done: {label:<28} rtt={rtt:>4g}ms n={n:<5} c={result.get('c')}: {result['rate']:.1f}/s",
            file=sys.stderr,
            flush=True,
        )
        return result

    def e2e(
        self,
        n: int,
        c: int,
        rtt: float,
        ports: tuple[int, int],
        *,
        noop: bool = False,
        ssl_max_size: int | None = None,
        loop: str | None = None,
        label: str = "",
    ) -> dict | None:
        if self.redis_port is None:
            return None
        from bench import e2e

        ssl_max_size = self.args.ssl_max_size if ssl_max_size is None else ssl_max_size
        try:
            result = e2e.run(
                root=self.root,
                redis_port=self.redis_port,
                n=n,
                c=c,
                smtp_port=ports[0],
                imap_port=ports[1],
                ca_file=str(self.pki.ca_file),
                noop=noop,
                loop=loop or self.args.loop,
                ssl_max_size=ssl_max_size,
            )
        except e2e.NotAvailable as exc:
            print(f"! end-to-end skipped: {exc}", file=sys.stderr)
            return None
        return self.add(result, label or ("arq-noop" if noop else "e2e"), rtt, result.get("machine_busy_s"))

    def single_check_s(self, kind: str, ports: tuple[int, int], rtt: float) -> float:
        r = self.scenario(kind, self.args.t1_samples, 1, rtt, ports, record=False)
        return r["median_s"]


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'scenario':<28} {'RTT':>5} {'N':>5} {'C':>4} {'checks/s':>9} {'median s':>9} {'p99 s':>7} "
        f"{'peak RSS MB':>11} {'KB/inflight':>11} {'CPU ms/chk':>10} {'srv ms/chk':>10} {'fail':>4}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        extrap = " *" if r["kind"] == "naive" else ""
        print(
            f"{r['label'] + extrap:<28} {r['rtt_ms']:>5g} {r.get('n_total', r['n']):>5} "
            f"{r.get('c') or '-':>4} "
            f"{r['rate']:>9.1f} {fmt(r.get('median_s'), '9.3f')} {fmt(r.get('p99_s'), '7.3f')} "
            f"{fmt(r.get('rss_peak_kb') and r['rss_peak_kb'] / 1024, '11.1f')} "
            f"{fmt(r.get('kb_per_check'), '11.0f')} "
            f"{fmt(r.get('cpu_ms'), '10.2f')} {fmt(r.get('srv_ms'), '10.2f')} {r['fails']:>4}"
        )
    print(
        "  * naive: measured on a sample of --naive-sample checks, checks/s extrapolated to N "
        "(N / rate = time for N)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="inboxcheck benchmark (loopback only)")
    p.add_argument("--n", type=int, default=1000, help="checks per scenario (default 1000)")
    p.add_argument("--c", type=int, default=100, help="concurrency / worker max_jobs (default 100)")
    p.add_argument("--rtts", default="50,100", help="simulated round trips in ms for the delay runs")
    p.add_argument("--latency-c", type=int, default=200, help="concurrency for the delay runs (default 200)")
    p.add_argument("--latency-n", type=int, default=None, help="N for the delay runs (default --n)")
    p.add_argument("--mem-c", type=int, default=500, help="concurrency for the memory runs (default 500)")
    p.add_argument("--mem-n", type=int, default=None, help="N for the memory runs (default 2 x --mem-c)")
    p.add_argument(
        "--mem-rtt",
        type=float,
        default=50,
        help="RTT of the memory runs, so every in-flight check holds open TLS connections (default 50 ms)",
    )
    p.add_argument("--naive-sample", type=int, default=20, help="naive checks actually run per RTT")
    p.add_argument("--t1-samples", type=int, default=5, help="sequential checks timing 'one check'")
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop for raw/inproc/e2e (default asyncio, as shipped)",
    )
    p.add_argument(
        "--ssl-max-size",
        type=int,
        default=0,
        help="bench-side monkeypatch of asyncio.sslproto.SSLProtocol.max_size (0 = as shipped)",
    )
    p.add_argument(
        "--fix-ssl-max-size",
        type=int,
        default=16384,
        help="buffer size the 'proposed fix' memory rows use (default 16384)",
    )
    p.add_argument("--smtpd-procs", type=int, default=1, help="aiosmtpd processes sharing the port")
    p.add_argument("--no-e2e", action="store_true", help="skip the arq scenarios")
    p.add_argument("--no-mem", action="store_true", help="skip the C=500 memory runs")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI)")
    p.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--json", metavar="FILE", help="also write all rows as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    p.add_argument(
        "--hostile",
        action="store_true",
        help="only the hostile-server run: a worker at --c jobs, peak RSS against its budget",
    )
    p.add_argument("--soak", type=float, metavar="SECONDS", default=0, help="only the soak run, this long")
    p.add_argument("--soak-every", type=float, default=15, help="seconds between soak samples (default 15)")
    args = p.parse_args(argv)
    if args.hostile or args.soak:
        return hostile_main(args)
    if args.quick:
        # CI's smoke run (~25 s on 2 cores): every scenario kind and the proxy once, tiny N, no
        # memory runs (their targets need C=500 to mean anything). Exit 2 only if a check failed
        # (a crashed scenario raises); missed targets are printed, not fatal (that is --strict).
        args.n, args.c, args.latency_c, args.latency_n = 20, 10, 10, 20
        args.naive_sample, args.t1_samples, args.rtts, args.no_mem = 2, 1, "20", True
    latency_n = args.latency_n or args.n
    mem_n = args.mem_n or 2 * args.mem_c
    rtts = [float(x) for x in args.rtts.split(",") if x.strip()]

    bench = Bench(args)
    started = time.monotonic()
    targets: list[tuple[str, float | None, str, bool | None]] = []
    try:
        bench.start()
        direct = (bench.smtp_port, bench.imap_port)
        print(
            f"servers: dovecot imaps 127.0.0.1:{bench.imap_port}, aiosmtpd 127.0.0.1:{bench.smtp_port}"
            f"{f', redis 127.0.0.1:{bench.redis_port}' if bench.redis_port else ''}; "
            f"{os.cpu_count()} cores; loop={args.loop}",
            file=sys.stderr,
        )

        # 1-5 with no injected delay
        raw0 = bench.scenario("raw", args.n, args.c, 0, direct)
        inproc0 = bench.scenario("inproc", args.n, args.c, 0, direct)
        e2e0 = bench.e2e(args.n, args.c, 0, direct)
        naive0 = bench.scenario("naive", args.naive_sample, 1, 0, direct)
        naive0["n_total"] = args.n
        bench.e2e(args.n, args.c, 0, direct, noop=True)  # its row: the queue's own ceiling

        # 1-4 again through the delay proxy
        by_rtt: dict[float, dict] = {}
        for rtt in rtts:
            proxy, sp, ip = bench.proxy(rtt)
            try:
                ports = (sp, ip)
                t1 = bench.single_check_s("inproc", ports, rtt)
                res = {
                    "t1": t1,
                    "raw": bench.scenario("raw", latency_n, args.latency_c, rtt, ports),
                    # quick: inproc already ran above (no delay); e2e stands for it here
                    "inproc": None
                    if args.quick
                    else bench.scenario("inproc", latency_n, args.latency_c, rtt, ports),
                    "e2e": bench.e2e(latency_n, args.latency_c, rtt, ports),
                }
                res["naive"] = bench.scenario("naive", args.naive_sample, 1, rtt, ports)
                res["naive"]["n_total"] = latency_n
                by_rtt[rtt] = res
            finally:
                proxy.stop()

        # memory at C=mem_c: as shipped, with --fix-ssl-max-size's TLS buffer, and on uvloop
        mem_rows: dict[str, dict] = {}
        if not args.no_mem:
            proxy, sp, ip = bench.proxy(args.mem_rtt)
            try:
                ports = (sp, ip)
                mem_rows["raw"] = bench.scenario(
                    "raw", mem_n, args.mem_c, args.mem_rtt, ports, label="raw mem"
                )
                mem_rows["shipped"] = bench.scenario(
                    "inproc",
                    mem_n,
                    args.mem_c,
                    args.mem_rtt,
                    ports,
                    label="inproc mem (as shipped)",
                    loop="asyncio",
                    ssl_max_size=0,
                )
                mem_rows["buffer"] = bench.scenario(
                    "inproc",
                    mem_n,
                    args.mem_c,
                    args.mem_rtt,
                    ports,
                    loop="asyncio",
                    ssl_max_size=args.fix_ssl_max_size,
                    label=f"inproc mem ssl buf {args.fix_ssl_max_size // 1024}K",
                )
                mem_rows["uvloop"] = bench.scenario(
                    "inproc",
                    mem_n,
                    args.mem_c,
                    args.mem_rtt,
                    ports,
                    loop="uvloop",
                    ssl_max_size=0,
                    label="inproc mem uvloop",
                )
                e2e_mem = bench.e2e(mem_n, args.mem_c, args.mem_rtt, ports, label="e2e mem")
                if e2e_mem:
                    mem_rows["e2e"] = e2e_mem
            finally:
                proxy.stop()
    finally:
        bench.stop()

    print()
    try:
        import uvloop  # noqa: F401

        worker_loop = "uvloop"
    except ImportError:
        worker_loop = "asyncio"
    ssl_max_size = args.ssl_max_size or "as shipped (16 KiB, jobs.tls; raw: 256 KiB)"
    print(
        f"inboxcheck benchmark: {os.cpu_count()} cores, loop={args.loop} (e2e worker: {worker_loop}, "
        f"as worker.runtime.supervisor ships), ssl max_size={ssl_max_size}, "
        f"wall {time.monotonic() - started:.0f}s"
    )
    print_table(bench.rows)
    print()

    # -- targets ---------------------------------------------------------------------------------
    ours0 = e2e0 or inproc0
    ours_name = "e2e" if e2e0 else "inproc (e2e n/a)"
    ratio = ours0["rate"] / raw0["rate"]
    targets.append(
        (
            f"{ours_name} / raw checks/s, no delay",
            ratio,
            f">= {TARGET_E2E_VS_RAW}",
            ratio >= TARGET_E2E_VS_RAW,
        )
    )
    ratio = ours0["cpu_ms"] / raw0["cpu_ms"]
    targets.append(
        (
            f"{ours_name} / raw CPU s per check, no delay",
            ratio,
            f"<= {TARGET_CPU_VS_RAW}",
            ratio <= TARGET_CPU_VS_RAW,
        )
    )
    if 100 in by_rtt or rtts:
        rtt = 100.0 if 100.0 in by_rtt else max(by_rtt)
        res = by_rtt[rtt]
        ours = res["e2e"] or res["inproc"] or res["raw"]
        name = "e2e" if res["e2e"] else "inproc" if res["inproc"] else "raw"
        ideal = latency_n / args.latency_c * res["t1"]
        ratio = ours["wall_s"] / ideal
        targets.append(
            (
                f"{name} @{rtt:g}ms N={latency_n} C={args.latency_c}: wall / (N/C x t1={res['t1']:.3f}s)",
                ratio,
                f"<= {TARGET_LATENCY_VS_IDEAL}",
                ratio <= TARGET_LATENCY_VS_IDEAL,
            )
        )
        raw_ratio = res["raw"]["wall_s"] / ideal
        targets.append((f"  (raw, same run, for reference: {raw_ratio:.2f})", None, "", None))
    if rtts:
        rtt = 50.0 if 50.0 in by_rtt else min(by_rtt)
        res = by_rtt[rtt]
        ours = res["e2e"] or res["inproc"] or res["raw"]
        name = "e2e" if res["e2e"] else "inproc" if res["inproc"] else "raw"
        ratio = ours["rate"] / res["naive"]["rate"]
        targets.append(
            (
                f"{name} / naive checks/s @{rtt:g}ms (C={args.latency_c})",
                ratio,
                f">= {TARGET_E2E_VS_NAIVE}",
                ratio >= TARGET_E2E_VS_NAIVE,
            )
        )
    if mem_rows:
        for key, text in (
            ("shipped", "as shipped"),
            ("buffer", f"ssl buffer {args.fix_ssl_max_size // 1024} KiB"),
            ("uvloop", "uvloop"),
        ):  # e2e: in-flight count unknown (worker reaches far below C), not judged
            if key in mem_rows:
                kb = mem_rows[key]["kb_per_check"]
                targets.append(
                    (
                        f"KB RSS per in-flight check @C={args.mem_c} ({text})",
                        kb,
                        f"< {TARGET_KB_PER_CHECK}",
                        kb < TARGET_KB_PER_CHECK,
                    )
                )
    print("targets:")
    for name, value, want, ok in targets:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {name:<70} {fmt(value, '8.2f'):>8} {want:<8} {verdict}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": bench.rows, "targets": targets}, indent=1, default=str)
        )
    failed_checks = sum(r["fails"] for r in bench.rows)
    if failed_checks:
        print(f"ERROR: {failed_checks} checks failed; the figures above are not valid", file=sys.stderr)
        return 2
    if args.strict and any(ok is False for _, _, _, ok in targets):
        return 1
    return 0


def hostile_main(args: argparse.Namespace) -> int:
    """The hostile-server run or the soak (bench/hostile.py), on the bench's servers."""
    from bench import hostile

    args.no_e2e = False
    bench = Bench(args)
    try:
        bench.start()
        if bench.redis_port is None:
            print("ERROR: the hostile and soak runs need redis-server", file=sys.stderr)
            return 2
        print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores", flush=True)
        return hostile.run(
            "soak" if args.soak else "hostile",
            root=bench.root,
            pki=bench.pki,
            redis_port=bench.redis_port,
            smtp_port=bench.smtp_port,
            imap_port=bench.imap_port,
            n=args.n,
            c=args.c,
            soak_s=args.soak,
            every_s=args.soak_every,
        )
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
