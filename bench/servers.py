"""Local servers for the benchmark, loopback only: Dovecot (IMAP, implicit TLS), aiosmtpd
(SMTP with required STARTTLS + AUTH) and, for the arq scenarios, redis-server.

Dovecot gets its own generated config here, tuned for a few hundred concurrent logins:
  * service imap-login: service_count=0 ("high-performance mode": one login process serves many
    clients), client_limit high, process_min_avail = cores;
  * service imap: process_limit above the concurrency (one imap process per logged-in session)
    and service_count=0 so post-login processes are reused instead of fork+exec per login;
  * mail_max_userip_connections: the default 10 per user+IP refuses the 11th concurrent
    session of one bench user from 127.0.0.1 -- raised, and checks also spread over many users;
  * auth_failure_delay = 0, auth cache on, passwd-file with PLAIN passwords (cheap auth);
  * default_client_limit / auth and anvil client limits raised to match;
  * mail in memory-indexed empty Maildirs (EXAMINE does no index writes).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.servers.certs import PKI
from tests.servers.ports import free_port
from tests.servers.wait import wait_until

if TYPE_CHECKING:
    from jobs.options import CheckOptions

LOOPBACK = "127.0.0.1"
USERS = 64  # bench accounts: user0..user63@bench.test, password "pw-<n>"
# Dovecot's concurrency for the benches that check one inbox at a time (start_mail): a few
# sessions at once, as a check may log in while the last one's LOGOUT is still closing.
FEW_AT_A_TIME = 10


def user(i: int) -> tuple[str, str]:
    n = i % USERS
    return f"user{n}@bench.test", f"pw-{n}"


def _port_open(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=0.5):
        return True


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = inboxcheck-bench-{port}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 1M
auth_cache_ttl = 1 hour
mail_location = maildir:{root}/mail/%n:INDEX=MEMORY
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 0
mail_max_userip_connections = 100000
default_internal_user = dovecot
default_login_user = dovenull
default_process_limit = {procs}
default_client_limit = {clients}
default_vsz_limit = 512M
login_log_format_elements = user=<%u>
verbose_proctitle = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%n
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
  }}
  service_count = 0
  process_min_avail = {cores}
  process_limit = {cores}
  client_limit = {clients}
}}
service imap {{
  service_count = 0
  process_limit = {procs}
  client_limit = 1
  process_min_avail = {cores}
}}
service auth {{
  client_limit = {clients}
}}
service anvil {{
  client_limit = {clients}
  # mode 0 = no socket: the soak's wrong-password jobs would otherwise earn every login from
  # 127.0.0.1 seconds of auth penalty, and good checks would time out behind them.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  client_limit = {clients}
}}
"""


def start_dovecot(root: Path, pki: PKI, concurrency: int) -> tuple[Proc, int]:
    dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(dovecot):
        raise RuntimeError("dovecot not found: apt-get install dovecot-imapd")
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir(exist_ok=True)
    # Dovecot refuses to run helpers from a base_dir others can write into; keep it 0755.
    os.chmod(root, 0o755)
    # ...and its auth process (user dovecot) must be able to traverse to the passwd file.
    for parent in root.parents:
        st = parent.stat()
        if (
            st.st_uid == os.getuid()
            and not st.st_mode & 0o001
            and str(parent).startswith(tempfile.gettempdir())
        ):
            os.chmod(parent, st.st_mode | 0o011)
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # mail processes must not run as root; use dovecot's own user
        import pwd

        ent = pwd.getpwnam("dovecot")
        uid, gid = ent.pw_uid, ent.pw_gid
    lines = []
    for i in range(USERS):
        name, pw = user(i)
        lines.append(f"{name}:{{PLAIN}}{pw}::::::")
        home = root / "mail" / name.split("@")[0]
        for d in ("cur", "new", "tmp"):
            (home / d).mkdir(parents=True, exist_ok=True)
    (root / "passwd").write_text("\n".join(lines) + "\n")
    if os.getuid() == 0:
        for path in [root / "mail", *(root / "mail").rglob("*")]:
            os.chown(path, uid, gid)
    # Dovecot reads the key as root before dropping privileges; copy so our perms are simple.
    cert, key = pki.valid.cert_file, pki.valid.key_file
    procs = max(256, concurrency * 2 + 64)
    clients = max(2048, concurrency * 8)
    cores = os.cpu_count() or 2
    for attempt in range(5):
        port = free_port()
        conf = root / "dovecot.conf"
        conf.write_text(
            DOVECOT_CONF.format(
                root=root,
                cert=cert,
                key=key,
                port=port,
                uid=uid,
                gid=gid,
                procs=procs,
                clients=clients,
                cores=cores,
            )
        )
        log = root / "dovecot.log"
        log.write_text("")
        popen = subprocess.Popen(
            [dovecot, "-F", "-c", str(conf)], stdout=open(root / "dovecot.out", "w"), stderr=subprocess.STDOUT
        )
        proc = Proc("dovecot", popen, log)

        def probe(popen: subprocess.Popen[bytes] = popen, log: Path = log, port: int = port) -> bool:
            if popen.poll() is not None:
                raise RuntimeError(
                    "dovecot exited:\n" + (root / "dovecot.out").read_text()[-2000:] + log.read_text()[-2000:]
                )
            return _port_open(port)

        try:
            wait_until(probe, timeout=15, what="dovecot", details=lambda log=log: log.read_text()[-2000:])
            return proc, port
        except RuntimeError:
            if "in use" in log.read_text() and attempt < 4:
                continue
            raise
    raise RuntimeError("dovecot did not start")


def start_smtpd(root: Path, pki: PKI, processes: int = 1) -> tuple[list[Proc], int]:
    """aiosmtpd in its own process(es) (SO_REUSEPORT), so its CPU is not the checker's."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for i in range(processes):
        log = root / f"smtpd{i}.log"
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.smtpd",
                "--port",
                str(port),
                "--cert",
                str(pki.valid.cert_file),
                "--key",
                str(pki.valid.key_file),
                "--users",
                str(USERS),
            ],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        procs.append(Proc(f"smtpd{i}", popen, log))

    def probe() -> bool:
        for p in procs:
            if p.popen.poll() is not None:
                raise RuntimeError("smtpd exited:\n" + p.log.read_text()[-2000:])
        return _port_open(port)

    wait_until(probe, timeout=15, what="aiosmtpd")
    time.sleep(0.2 if processes > 1 else 0)
    return procs, port


def start_redis(root: Path) -> tuple[Proc, int]:
    redis = shutil.which("redis-server")
    if redis is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "redis.log"
    popen = subprocess.Popen(
        [
            redis,
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
            "--protected-mode",
            "yes",
        ],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    proc = Proc("redis", popen, log)

    def probe() -> bool:
        if popen.poll() is not None:
            raise RuntimeError("redis exited:\n" + log.read_text()[-2000:])
        return _port_open(port)

    wait_until(probe, timeout=10, what="redis")
    return proc, port


def start_mail(root: Path, pki: PKI) -> tuple[list[Proc], int, int]:
    """Dovecot (implicit TLS) and one aiosmtpd (STARTTLS, AUTH PLAIN), sized for checks one at a
    time: their processes (stop them in reverse), the SMTP port and the IMAP port."""
    dovecot, imap_port = start_dovecot(root / "dovecot", pki, FEW_AT_A_TIME)
    try:
        smtpd, smtp_port = start_smtpd(root / "smtpd", pki)
    except BaseException:
        dovecot.stop()
        raise
    return [dovecot, *smtpd], smtp_port, imap_port


def mail_request(i: int, smtp_port: int, imap_port: int, **extra: Any) -> dict[str, Any]:
    """The request fields for bench user `i` on start_mail's servers (or proxies in front)."""
    name, password = user(i)
    return {
        "inbox_type": "CUSTOM_SMTP",
        "email": name,
        "smtp_host": LOOPBACK,
        "smtp_port": smtp_port,
        "smtp_security": "starttls",
        "imap_host": LOOPBACK,
        "imap_port": imap_port,
        "imap_use_ssl": True,
        "smtp_password": password,
        **extra,
    }


def loopback_options(pki: PKI) -> CheckOptions:
    """Check options that trust the bench's CA and allow loopback destinations only."""
    from jobs.destinations import DestinationPolicy, parse_networks
    from jobs.options import CheckOptions

    loopback = DestinationPolicy(allowed_networks=parse_networks("127.0.0.0/8"))
    return CheckOptions(ca_file=str(pki.ca_file), ehlo_hostname="localhost", destinations=loopback)
