#!/usr/bin/env python3
"""strata demo web app: a page at / and a health check at /health.

Standard library only. Configuration through the environment:
  APP_PORT   TCP port to listen on (default 8080)
  APP_BIND   address to bind (default 0.0.0.0)
  APP_STATE  folder for state, the visit counter (default /var/lib/app)
"""

import html
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "1.0.0"
STARTED = time.time()


class Counter:
    """A visit counter kept in a file, written atomically."""

    def __init__(self, folder):
        self.path = os.path.join(folder, "visits")
        self.lock = threading.Lock()
        try:
            with open(self.path, encoding="ascii") as f:
                self.value = int(f.read().strip() or 0)
        except (OSError, ValueError):
            self.value = 0

    def bump(self):
        with self.lock:
            self.value += 1
            tmp = self.path + ".tmp"
            try:
                with open(tmp, "w", encoding="ascii") as f:
                    f.write(f"{self.value}\n")
                os.replace(tmp, self.path)
            except OSError:
                pass  # a read-only state folder costs the count, not the page
            return self.value


class Handler(BaseHTTPRequestHandler):
    server_version = f"strata-demo/{VERSION}"
    counter = None  # set in main()

    def _send(self, status, content_type, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            body = {"status": "ok", "version": VERSION, "uptime_s": round(time.time() - STARTED, 1)}
            self._send(200, "application/json", json.dumps(body) + "\n")
        elif path == "/":
            visits = self.counter.bump() if self.command == "GET" else self.counter.value
            host = html.escape(socket.gethostname())
            page = (
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>strata demo</title></head>\n"
                f"<body><h1>strata demo</h1><p>Served by <b>{host}</b>, version {VERSION}.</p>\n"
                f"<p>Visits: {visits}</p><p><a href=\"/health\">/health</a></p></body></html>\n"
            )
            self._send(200, "text/html; charset=utf-8", page)
        else:
            self._send(404, "application/json", json.dumps({"error": "not found", "path": path}) + "\n")

    do_HEAD = do_GET

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def main():
    port_text = os.environ.get("APP_PORT", "8080")
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        sys.exit(f"app: APP_PORT must be a TCP port (1-65535), got {port_text!r}")
    bind = os.environ.get("APP_BIND", "0.0.0.0")
    Handler.counter = Counter(os.environ.get("APP_STATE", "/var/lib/app"))

    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        sys.stderr.write(f"app: signal {signum}, stopping\n")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"app: listening on {bind}:{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
