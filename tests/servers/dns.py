"""A DNS server on 127.0.0.1 (UDP, a free port) whose answers the test decides.

Names in `records` get their A and AAAA records, every other name NXDOMAIN; `mode` makes it
answer SERVFAIL to everything (a broken resolver) or nothing at all (an unreachable one). Checks
reach it through INBOXCHECK_DNS_SERVERS / CheckOptions.dns_servers, so no test's verdict depends
on the machine's own resolver.
"""

from __future__ import annotations

import ipaddress
import socketserver
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Mode = Literal["answer", "servfail", "silent"]
TTL_S = 60


class DnsServer:
    def __init__(self, records: Mapping[str, Sequence[str]] | None = None, mode: Mode = "answer") -> None:
        self.records = {
            name.rstrip(".").lower(): tuple(addresses) for name, addresses in (records or {}).items()
        }
        self.mode = mode
        self.questions: list[tuple[str, str]] = []
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        self._server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = ("127.0.0.1", int(self._server.server_address[1]))
        self._thread = threading.Thread(target=self._server.serve_forever, name="dns-server", daemon=True)

    def answer(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.questions.append((name, dns.rdatatype.to_text(question.rdtype)))
        if self.mode == "silent":
            return None
        response = dns.message.make_response(query)
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            version = 6 if question.rdtype == dns.rdatatype.AAAA else 4
            found = [a for a in self.records[name] if ipaddress.ip_address(a).version == version]
            if found:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, TTL_S, "IN", question.rdtype, found)
                )
        return response.to_wire()

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
