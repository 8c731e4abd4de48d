#!/usr/bin/env python3
"""A tiny fake of Clerk's Backend API for the contract run (scripts/contract): loopback only, standard library only.

It answers the two lookups the daemon's fallback makes, from the recorded events in tests/fixtures/clerk/:
`GET /v1/users/{id}` and `GET /v1/organizations/{id}`. Whether Clerk "has" an id is a fixed function of the id
(the sum of its bytes is even), so schemathesis meets both answers, 200 and 404, and a rerun meets the same
ones. Anything else is a 404 in Clerk's error shape. It writes the port it listens on to the file named by its
only argument, then serves until it is terminated.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clerk"
USER = json.loads((FIXTURES / "user.created.json").read_text())["data"]
ORGANIZATION = json.loads((FIXTURES / "organization.created.json").read_text())["data"]


def clerk_has(record_id: str) -> bool:
    return sum(record_id.encode()) % 2 == 0


def not_found(kind: str) -> dict:
    return {"errors": [{"code": "resource_not_found", "message": f"{kind} not found"}]}


class Clerk(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        now_ms = int(time.time() * 1000)
        if len(parts) == 3 and parts[:2] == ["v1", "users"]:
            self.lookup(parts[2], "user", USER, now_ms)
        elif len(parts) == 3 and parts[:2] == ["v1", "organizations"]:
            self.lookup(parts[2], "organization", ORGANIZATION, now_ms)
        else:
            self.answer(404, not_found("resource"))

    def lookup(self, record_id: str, kind: str, template: dict, now_ms: int) -> None:
        if not clerk_has(record_id):
            self.answer(404, not_found(kind))
            return
        # The recorded object under the asked id; `updated_at` moves on, so every sync applies.
        self.answer(200, dict(template, id=record_id, updated_at=now_ms))

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the standard library's signature)
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Clerk)
    Path(sys.argv[1]).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
