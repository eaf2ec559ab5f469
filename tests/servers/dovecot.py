"""A real Dovecot IMAP server run from a generated config in a private directory.

Facts about Dovecot 2.3 this config relies on (each was checked by hand):

* A client whose IP equals the server's IP counts as "secured": on plain
  127.0.0.1 Dovecot would never advertise LOGINDISABLED and would take LOGIN
  before STARTTLS. ``imap_port`` is therefore a forwarder that sends a PROXY
  header claiming 127.0.0.2 (see proxy.py) into a ``haproxy = yes`` listener.
  ``imaps_port`` is implicit TLS, secured anyway, and is served directly.
* passwd-file re-stats its file at most once per second, so a password change
  could go unseen by the next login. Users live in a ``dict`` file passdb
  instead: it reopens the file whenever its inode changes, and every change
  here is an atomic rename.
* Failed logins are answered only on a 500 ms timer whatever
  ``auth_failure_delay`` says, and anvil's auth penalty adds seconds more per
  failure from one IP. A first passdb with ``noauthenticate nodelay`` marks
  every request "reply at once" (its fields survive the later mismatch), and
  the anvil-auth-penalty socket is disabled (mode 0).
* Dovecot refuses mail processes with uid 0. As root, mail processes run as
  ``nobody`` and chroot into the mail root (home ``<mail>/./<user>``), so
  pytest's 0700 tmp directories need not be opened up to anyone; auth runs as
  root to read the users file there. Unprivileged, everything runs as the
  current user, without chroots.

OAuth2 (``oauth2_introspection_url``): ``auth_mechanisms`` gains ``xoauth2
oauthbearer`` and a ``passdb oauth2`` for just those mechanisms asks that URL
(``introspection_mode = post``: ``token=<token>``) and wants ``{"active": true,
"username": <login>}``, as in /work/shared/reference/oauth2.md "Testing on
loopback". The password passdb is limited to ``plain login``. What 2.3.19 then
does (checked by tests/servers/test_servers.py): a rejected token gets ``+
<base64 JSON>`` (XOAUTH2: ``{"status":"401","schemes":"bearer","scope":"mail"}``,
OAUTHBEARER: ``{"status":"invalid_token"}``), and after the client's answer
``NO [AUTHENTICATIONFAILED] Authentication failed.``; an introspection endpoint
that fails gets ``NO [UNAVAILABLE] Temporary authentication failure.
[<host>:<time>]``. SASL-IR is advertised, and a 4.2 KB initial response (a 3 KB
token) is taken on one line. XOAUTH2 counts as a plaintext mechanism, so, like
PLAIN, it is offered on ``imap_port`` only after STARTTLS. Users still need
``set_user`` (it makes their maildir); their password keeps working for LOGIN.

Dovecot 2.4 (Debian 13) needs a different config syntax: ``dovecot --version``
picks ``_render_config_24`` for 2.4.x, the 2.3 renderer for anything else. 2.4
has no dict passdb, so there users live in a passwd-file; see ``_write_users``
for how a change is made visible to the next login despite its stat caching.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tests.servers.certs import ServerCert
from tests.servers.lifecycle import StartStop
from tests.servers.ports import LOOPBACK, free_port
from tests.servers.proxy import proxy_protocol_forwarder
from tests.servers.tcp import ThreadedTcpServer
from tests.servers.wait import NotReady, wait_until

SETUP_HINT = (
    "Dovecot is needed by the IMAP tests but was not found. Run the project's "
    "setup, `./dev setup` (or run the tests with `./dev test`), which installs the "
    "Debian package dovecot-imapd; or point DOVECOT_BIN at a dovecot binary."
)

# Usernames end up in paths and in the users file: keep them boring.
_USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%+@-]*$")
_START_ATTEMPTS = 3  # free ports are picked before dovecot binds them: retry a lost race
_MAIL_USER_WHEN_ROOT = "nobody"


class Account(NamedTuple):
    """An IMAP login: unpacks as ``email, password``."""

    email: str
    password: str


class DovecotNotInstalled(RuntimeError):
    """No dovecot binary: the environment was not set up."""


class DovecotStartError(RuntimeError):
    """Dovecot did not come up; the message carries its log tail."""


def find_dovecot() -> str:
    """Path of the dovecot binary (``$DOVECOT_BIN``, PATH, or /usr/sbin)."""
    candidates = [os.environ.get("DOVECOT_BIN"), shutil.which("dovecot"), "/usr/sbin/dovecot"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DovecotNotInstalled(SETUP_HINT)


@dataclass(frozen=True)
class _Identity:
    """Who the mail processes run as, and whether Dovecot can drop privileges."""

    privileged: bool
    uid: int
    gid: int
    user_name: str  # for default_internal_user/default_login_user when unprivileged
    group_name: str

    @classmethod
    def detect(cls) -> _Identity:
        if os.geteuid() == 0:
            mail = pwd.getpwnam(_MAIL_USER_WHEN_ROOT)
            return cls(True, mail.pw_uid, mail.pw_gid, "root", "root")
        me = pwd.getpwuid(os.geteuid())
        return cls(False, me.pw_uid, os.getegid(), me.pw_name, grp.getgrgid(os.getegid()).gr_name)


class Dovecot(StartStop):
    """A Dovecot serving IMAP on 127.0.0.1: ``imaps_port`` (TLS) and ``imap_port`` (STARTTLS).

    Everything lives under ``workdir`` (config, base_dir, state, log, users,
    mail), so several instances can run at once. Users can be added or have
    their password changed at any time with ``set_user``; the next login sees it.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        workdir: Path,
        cert: ServerCert,
        *,
        binary: str | None = None,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.cert = cert
        self._binary = binary
        # Where passdb oauth2 checks XOAUTH2/OAUTHBEARER tokens (see the module docstring).
        self.oauth2_introspection_url = oauth2_introspection_url
        self._identity = _Identity.detect()
        self.imaps_port: int = 0
        self.imap_port: int = 0  # the PROXY-header forwarder in front of Dovecot
        self._haproxy_port: int = 0
        self._users: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._forwarder: ThreadedTcpServer | None = None

        self.config_file = workdir / "dovecot.conf"
        self.log_file = workdir / "dovecot.log"
        self._stderr_file = workdir / "dovecot.stderr"
        self._dict_conf = workdir / "auth-dict.conf.ext"
        self._users_file = workdir / "users.dict"
        self._passwd_file = workdir / "users.passwd"  # Dovecot 2.4 only
        self._oauth2_conf = workdir / "dovecot-oauth2.conf.ext"  # Dovecot 2.3 only
        self._dovecot_24 = False  # set by start() from `dovecot --version`
        self._base_dir = workdir / "run"
        self._state_dir = workdir / "state"
        self.mail_root = workdir / "mail"

    # -- users ---------------------------------------------------------------

    @property
    def users(self) -> dict[str, str]:
        """A copy of the current users and passwords; change them with set_user."""
        return dict(self._users)

    def set_user(self, name: str, password: str) -> None:
        """Add a user or change its password; effective for the next login."""
        if not _USERNAME_RE.match(name) or ".." in name:
            raise ValueError(f"unsupported IMAP username for the test server: {name!r}")
        self._users[name] = password
        self._make_maildir(name)
        self._write_users()

    def remove_user(self, name: str) -> None:
        """Forget a user (its mail stays on disk); logins then fail as unknown user."""
        self._users.pop(name, None)
        self._write_users()

    # -- lifecycle -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> Dovecot:
        """Start Dovecot and return once both ports greet a client."""
        if self._proc is not None:
            raise RuntimeError("dovecot already started")
        binary = self._binary or find_dovecot()
        self._dovecot_24 = _is_dovecot_24(binary)
        self._prepare_dirs()
        self._write_users()
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.imaps_port, self._haproxy_port = _two_free_ports()
            self._write_config()
            self._spawn(binary)
            try:
                self._start_forwarder()
                wait_until(
                    self._greets,
                    timeout=timeout,
                    what=f"dovecot on {self.host}:{self.imaps_port}/{self.imap_port}",
                    details=self._failure_details,
                )
                return self
            except _DovecotExited:
                port_taken = "Address already in use" in self._failure_details()
                self.stop()
                if not (port_taken and attempt < _START_ATTEMPTS):
                    raise DovecotStartError(
                        f"dovecot exited during start-up\n{self._failure_details()}"
                    ) from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the forwarder and Dovecot with all its child processes."""
        if self._forwarder is not None:
            self._forwarder.stop()
            self._forwarder = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # SIGKILL to the whole process group. Graceful ways were slower and
        # flaky: SIGTERM to the master alone leaves an imap process with a client
        # attached for ~10 s; SIGTERM to the group races the master respawning
        # its log process (stalls of 6 s). Nothing in a test server needs a clean
        # shutdown, and start() clears the stale base_dir.
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
        try:
            wait_until(
                lambda: not _live_group_members(proc.pid),
                timeout=timeout,
                what=f"dovecot processes (group {proc.pid}) to exit",
            )
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)  # any forked since; then give up

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Dovecot's log (for failure messages)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        # Unix sockets (base_dir/login/...) must fit in sun_path's 108 bytes.
        if len(str(self._base_dir)) > 80:
            raise ValueError(f"workdir path too long for Dovecot's sockets: {self.workdir}")
        for path in (self.workdir, self._state_dir, self.mail_root):
            path.mkdir(parents=True, exist_ok=True)
        # base_dir is recreated by Dovecot; a stale one from a crashed run would confuse it.
        shutil.rmtree(self._base_dir, ignore_errors=True)

    def _make_maildir(self, name: str) -> None:
        # Pre-created so INBOX exists before the first login and so Dovecot does
        # not log an error about a missing home on first chdir.
        home = self.mail_root / name
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        if self._identity.privileged:
            for dirpath, _dirnames, _files in os.walk(home):
                os.chown(dirpath, self._identity.uid, self._identity.gid)

    def _write_users(self) -> None:
        # dict "file" format: a key line, then a value line (JSON for auth).
        # {PLAIN.b64} keeps any character a test password may contain out of the syntax.
        lines = []
        for name, password in sorted(self._users.items()):
            encoded = base64.b64encode(password.encode("utf-8")).decode("ascii")
            lines.append(f"shared/passdb/{name}")
            lines.append(json.dumps({"password": "{PLAIN.b64}" + encoded}))
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self._users_file.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.chmod(0o600)
        os.replace(tmp, self._users_file)  # new inode: what makes Dovecot re-read it
        if self._dovecot_24:
            self._write_passwd_file()

    def _write_passwd_file(self) -> None:
        # Dovecot 2.4's passwd-file (src/auth/db-passwd-file.c) stats the file at
        # most once per second of its clock, and re-reads it only if the mtime
        # (whole seconds) or the size changed. So: replace the file atomically,
        # then, with Dovecot running, wait for the next whole second. Every later
        # lookup then falls in a later second than any lookup before this write,
        # and the next write gets a later mtime. Costs up to 1 s per change, on 2.4 only.
        lines = []
        for name, password in sorted(self._users.items()):
            encoded = base64.b64encode(password.encode("utf-8")).decode("ascii")
            lines.append(f"{name}:{{PLAIN.b64}}{encoded}")
        tmp = self._passwd_file.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.chmod(0o600)
        os.replace(tmp, self._passwd_file)
        if self._proc is not None:
            time.sleep(1.0 - time.time() % 1.0 + 0.01)

    def _write_config(self) -> None:
        if self._dovecot_24:
            self.config_file.write_text(_render_config_24(self))
            return
        self._dict_conf.write_text(
            f"uri = file:{self._users_file}\n"
            "password_key = passdb/%u\n"
            "iterate_disable = yes\n"
            "default_pass_scheme = PLAIN\n"
        )
        if self.oauth2_introspection_url is not None:
            self._oauth2_conf.write_text(_oauth2_settings(self.oauth2_introspection_url))
        self.config_file.write_text(_render_config(self))

    def _spawn(self, binary: str) -> None:
        self.log_file.unlink(missing_ok=True)
        with open(self._stderr_file, "wb") as stderr:
            self._proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # Own process group: stop() finds and ends every dovecot process by it.
                start_new_session=True,
            )

    def _start_forwarder(self) -> None:
        self._forwarder = ThreadedTcpServer(
            proxy_protocol_forwarder(self._haproxy_port), name="dovecot-imap-forwarder"
        ).start()
        self.imap_port = self._forwarder.port

    def _greets(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            raise _DovecotExited
        unverified = ssl.create_default_context()
        unverified.check_hostname = False  # readiness only: the cert may be a bad one on purpose
        unverified.verify_mode = ssl.CERT_NONE
        return _reads_greeting(self.imaps_port, unverified) and _reads_greeting(self.imap_port)

    def _failure_details(self) -> str:
        stderr = ""
        if self._stderr_file.exists():
            stderr = self._stderr_file.read_text(errors="replace").strip()
        parts = [f"--- {self.log_file} (tail) ---", self.log_tail()]
        if stderr:
            parts += ["--- dovecot stderr ---", stderr]
        return "\n".join(parts)


class _DovecotExited(Exception):
    pass


def _run_as(dc: Dovecot, user_variable: str) -> tuple[str, str, str]:
    """(mail home, privilege settings, login chroot line): the same in 2.3 and 2.4 syntax but for
    how the user name is spelled (%u / %{user})."""
    ident = dc._identity
    if ident.privileged:
        # "/./": chroot into the mail root, then run as the unprivileged mail uid.
        home = f"{dc.mail_root}/./{user_variable}"
        privileges = (
            f"valid_chroot_dirs = {dc.mail_root}\n"
            # The users file sits in pytest's root-only tmp dir.
            "service auth {\n  user = root\n}\n"
        )
        return home, privileges, ""
    privileges = (
        f"default_internal_user = {ident.user_name}\n"
        f"default_login_user = {ident.user_name}\n"
        # Unix sockets get chown'ed to this group; only root may pick another.
        f"default_internal_group = {ident.group_name}\n"
    )
    return f"{dc.mail_root}/{user_variable}", privileges, "  chroot =\n"  # chroot needs root


def _oauth2_settings(introspection_url: str) -> str:
    """The oauth2 settings, one per line, the same in 2.3's .conf.ext and 2.4's oauth2 { } block."""
    return (
        "introspection_mode = post\n"
        f"introspection_url = {introspection_url}\n"
        "username_attribute = username\n"
        "active_attribute = active\n"
        "active_value = true\n"
        "force_introspection = yes\n"
    )


def _render_config(dc: Dovecot) -> str:
    ident = dc._identity
    home, privileges, no_chroot = _run_as(dc, "%u")
    mechanisms = "plain login"
    oauth2_passdb = password_mechanisms = ""
    if dc.oauth2_introspection_url is not None:
        mechanisms += " xoauth2 oauthbearer"
        oauth2_passdb = (
            "# Bearer tokens: POSTed to the introspection URL (see the module docstring).\n"
            "passdb {\n"
            "  driver = oauth2\n"
            "  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {dc._oauth2_conf}\n"
            "}\n"
        )
        password_mechanisms = "  mechanisms = plain login\n"
    return f"""\
# Generated by tests/servers/dovecot.py; see its docstring for the why of each trick.
base_dir = {dc._base_dir}
state_dir = {dc._state_dir}
log_path = {dc.log_file}
protocols = imap
listen = {LOOPBACK}
{privileges}first_valid_uid = {min(ident.uid, 500)}

ssl = yes
ssl_cert = <{dc.cert.cert_file}
ssl_key = <{dc.cert.key_file}
disable_plaintext_auth = yes
# Only our forwarder speaks PROXY, claiming a client that is not 127.0.0.1.
haproxy_trusted_networks = {LOOPBACK}/32

auth_mechanisms = {mechanisms}
auth_failure_delay = 0
auth_cache_size = 0
# Fields of a "noauthenticate" passdb survive a later failure: nodelay makes
# failed logins answer at once instead of on the next 500 ms tick.
passdb {{
  driver = static
  args = noauthenticate=y nodelay=y
}}
{oauth2_passdb}# Re-read whenever the file's inode changes (passwd-file: at most once a second).
passdb {{
  driver = dict
{password_mechanisms}  args = {dc._dict_conf}
}}
userdb {{
  driver = static
  args = uid={ident.uid} gid={ident.gid} home={home}
}}
mail_location = maildir:~/Maildir

# Room for 200+ concurrent logins from one IP.
mail_max_userip_connections = 1000
default_client_limit = 4096
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {dc._haproxy_port}
    haproxy = yes
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {dc.imaps_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
{no_chroot}}}
service imap {{
  process_limit = 1024
}}
service anvil {{
{no_chroot}  # mode 0 = no socket: auth then never adds seconds of penalty per failure.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _is_dovecot_24(binary: str) -> bool:
    """Whether ``binary`` is Dovecot 2.4.x (``dovecot --version``: "2.4.1 (hash)")."""
    try:
        out = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return re.match(r"\s*2\.4\.", out) is not None


def _render_config_24(dc: Dovecot) -> str:
    """The 2.3 config above, in Dovecot 2.4 syntax. Not run here (Debian 12 has 2.3).

    Based on doc.dovecot.org/2.4.x: installation/upgrade/2.3-to-2.4.html
    (dovecot_config_version/dovecot_storage_version first; ssl_cert/ssl_key ->
    ssl_server_cert_file/ssl_server_key_file; disable_plaintext_auth ->
    auth_allow_cleartext; service_count -> restart_request_count, 0 invalid;
    mail_location -> mail_driver/mail_path; %u -> %{user}; passdb/userdb blocks
    need a name; default_fields -> fields; dict passdb removed), core/config/auth/
    databases/static.html and passwd_file.html (fields { }, passwd_file_path),
    core/config/service.html; and dovecot/core 2.4 sources: inet_listener has no
    "address" in 2.4 (it takes the global listen; dovecot/documentation#1347),
    anvil still has the anvil-auth-penalty listener, auth_failure_delay and
    auth_cache_size keep their names, anvil is no longer chrooted by default.

    OAuth2 from doc.dovecot.org/2.4.x core/config/auth/databases/oauth2.html: since
    2.4.0 the xoauth2/oauthbearer mechanisms check tokens without a passdb, using
    the settings of a top-level ``oauth2 { }`` named filter (names there without
    the ``oauth2_`` prefix; its WSO2 example is the same post-mode introspection).
    """
    ident = dc._identity
    home, privileges, no_chroot = _run_as(dc, "%{user}")
    mechanisms, oauth2 = "plain login", ""
    if dc.oauth2_introspection_url is not None:
        mechanisms += " xoauth2 oauthbearer"
        settings = _oauth2_settings(dc.oauth2_introspection_url)
        oauth2 = "oauth2 {\n" + "".join(f"  {line}\n" for line in settings.splitlines()) + "}\n"
    return f"""\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
# Generated by tests/servers/dovecot.py (Dovecot 2.4 syntax); see its docstring.
base_dir = {dc._base_dir}
state_dir = {dc._state_dir}
log_path = {dc.log_file}
protocols = imap
listen = {LOOPBACK}
{privileges}first_valid_uid = {min(ident.uid, 500)}

ssl = yes
ssl_server_cert_file = {dc.cert.cert_file}
ssl_server_key_file = {dc.cert.key_file}
auth_allow_cleartext = no
# Only our forwarder speaks PROXY, claiming a client that is not 127.0.0.1.
haproxy_trusted_networks = {LOOPBACK}/32

auth_mechanisms = {mechanisms}
auth_failure_delay = 0
auth_cache_size = 0
{oauth2}# Fields of a "noauthenticate" passdb survive a later failure: nodelay makes
# failed logins answer at once instead of on the next 500 ms tick.
passdb static {{
  driver = static
  fields {{
    noauthenticate = yes
    nodelay = yes
  }}
}}
# 2.4 has no dict passdb: see _write_passwd_file for the re-read caveat.
passdb passwd-file {{
  driver = passwd-file
  passwd_file_path = {dc._passwd_file}
  default_password_scheme = PLAIN
}}
userdb static {{
  driver = static
  fields {{
    uid = {ident.uid}
    gid = {ident.gid}
    home = {home}
  }}
}}
mail_driver = maildir
mail_path = ~/Maildir

# Room for 200+ concurrent logins from one IP.
mail_max_userip_connections = 1000
default_client_limit = 4096
service imap-login {{
  inet_listener imap {{
    port = {dc._haproxy_port}
    haproxy = yes
  }}
  inet_listener imaps {{
    port = {dc.imaps_port}
    ssl = yes
  }}
  restart_request_count = unlimited
  process_min_avail = 2
  client_limit = 1000
{no_chroot}}}
service imap {{
  process_limit = 1024
}}
service anvil {{
  # mode 0 = no socket: auth then never adds seconds of penalty per failure.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def _reads_greeting(port: int, tls: ssl.SSLContext | None = None) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=2) as raw:
        sock = tls.wrap_socket(raw) if tls else raw
        with sock, sock.makefile("rb") as stream:
            line = stream.readline()
    if not line.startswith(b"* OK"):
        raise NotReady(f"port {port} answered {line!r}")
    return True


def _live_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # After the ")" closing the command name: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":  # zombies are dead, just not reaped
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
