"""aiosmtpd for the benchmark: STARTTLS required before AUTH (PLAIN/LOGIN), loopback only.

Run as ``python -m bench.smtpd --port P --cert C --key K``; several processes may share the port
(SO_REUSEPORT). Uses uvloop when installed so the server is less of a bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from bench.servers import LOOPBACK, user


class Handler:
    async def handle_DATA(self, server, session, envelope):  # never used by the checks
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--users", type=int, default=64)
    args = parser.parse_args()
    accounts = {user(i)[0].encode(): user(i)[1].encode() for i in range(args.users)}

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and accounts.get(auth_data.login) == auth_data.password:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    handler = Handler()

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="bench.test",
            tls_context=context,
            require_starttls=True,
            auth_require_tls=True,
            authenticator=authenticator,
            auth_exclude_mechanism=["CRAM-MD5"],
        )

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((LOOPBACK, args.port))
        server = await loop.create_server(factory, sock=sock, backlog=4096)
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set_result, None)
        print("ready", flush=True)
        await stop
        server.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
