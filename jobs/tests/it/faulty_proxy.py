"""An HTTP proxy in front of an S3 server that injects the faults object stores have: a 503
SlowDown, a 429, a connection reset before any answer, and an answer that arrives after the
client gave up (the request was carried out upstream, its answer lost). Faults follow the
request count, so every kind happens in any run of more than a few dozen requests.

    python faulty_proxy.py LISTEN_PORT UPSTREAM_URL STATS_FILE [DELAY_SECONDS [DENY]]

The counts of each fault are written to STATS_FILE (JSON) after every request. With DENY, the
count-based faults are off and every write (PUT, POST) whose path holds DENY is refused with a
403 AccessDenied: an upload that can never succeed. With DENY written `reset:N:TEXT`, the first
N writes whose path holds TEXT get a reset connection instead (they never reach the server).
"""

import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
UPSTREAM = urllib.parse.urlsplit(sys.argv[2])
STATS = sys.argv[3]
DELAY = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
DENY = sys.argv[5] if len(sys.argv) > 5 else None
RESET_MODE = bool(DENY and DENY.startswith("reset:"))
RESETS = 0
if RESET_MODE:
    _, n, DENY = DENY.split(":", 2)
    RESETS = int(n)

lock = threading.Lock()
state = {"requests": 0, "slow_down_503": 0, "throttled_429": 0, "reset": 0, "late": 0, "denied": 0}

DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
          b'<Message>Access Denied</Message></Error>')
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message></Error>')


def fault_for(n):
    if n % 5 == 0:
        return "slow_down_503"
    if n % 7 == 0:
        return "throttled_429"
    if n % 11 == 0:
        return "reset"
    if n % 23 == 0:
        return "late"
    return None


def save():
    with open(STATS + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(STATS + ".tmp", STATS)


def count(kind):
    with lock:
        state[kind] += 1
        save()


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with lock:
            state["requests"] += 1
            n = state["requests"]
        kind = None if DENY else fault_for(n)
        global RESETS
        write = self.command in ("PUT", "POST") and DENY and DENY in urllib.parse.unquote(self.path)
        if write and RESET_MODE:
            with lock:
                if RESETS > 0:
                    RESETS -= 1
                    kind = "reset"
        elif write:
            count("denied")
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(DENIED)))
            self.end_headers()
            self.wfile.write(DENIED)
            return
        if kind == "slow_down_503" or kind == "throttled_429":
            count(kind)
            status = 503 if kind == "slow_down_503" else 429
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            # A HEAD answer has no body (its length is still the body's a GET would have).
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        if kind == "reset":
            count(kind)
            # An abortive close: the client sees a reset connection, no answer.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            self.close_connection = True
            return
        conn = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = self.headers.get("Host", f"{UPSTREAM.hostname}:{UPSTREAM.port}")
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if kind == "late":
            # Carried out upstream; the answer comes after the client's timeout.
            count(kind)
            time.sleep(DELAY)
        try:
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in ("transfer-encoding", "connection", "content-length"):
                    continue
                self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


save()
ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
