"""A fault-injecting HTTP proxy in front of the local hub, for the hub-failure tests (loopback only, bounded).

``FaultProxy(upstream)`` forwards every request to ``upstream`` (olah of ``helpers.course.hub.LocalHub``) unless a rule
matches its path: ``("status", 404)`` answers that status (with huggingface_hub's ``X-Error-Code`` for 404s),
``("cut", n)`` sends the upstream's headers and only ``n`` bytes of the body, then closes the connection and answers
nothing ever after (the server stopped midway). ``down()`` makes it refuse everything (closed connections).
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-authenticate", "host"}


class FaultProxy:
    def __init__(self, upstream: str):
        u = urlsplit(upstream)
        self.up_host, self.up_port = u.hostname, u.port
        self.rules: list[tuple[re.Pattern, tuple]] = []
        self.is_down = False
        self.hits: list[str] = []  # "METHOD path -> what happened", for the tests' messages
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                if proxy.is_down:
                    proxy.hits.append(f"{self.command} {self.path} -> refused (down)")
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                for pattern, action in proxy.rules:
                    if pattern.search(self.path):
                        if action[0] == "status":
                            proxy.hits.append(f"{self.command} {self.path} -> {action[1]}")
                            body = b'{"error": "injected by the test proxy"}'
                            self.send_response(action[1])
                            if action[1] == 404:
                                self.send_header("X-Error-Code", "EntryNotFound")
                            self.send_header("Content-Type", "application/json")
                            self.send_header("Content-Length", str(len(body)))
                            self.end_headers()
                            if self.command != "HEAD":
                                self.wfile.write(body)
                            return
                        if action[0] == "cut" and self.command == "GET":
                            return self._forward(cut=action[1])
                self._forward()

            def _forward(self, cut: int | None = None):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() in _HOP:
                        continue
                    if k.lower() == "location":
                        v = v.replace(f"{proxy.up_host}:{proxy.up_port}", f"127.0.0.1:{proxy.port}")
                    self.send_header(k, v)
                if r.getheader("Content-Length") is None and self.command != "HEAD":  # olah streams chunked
                    data = r.read()
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    conn.close()
                    if cut is not None:
                        self.wfile.write(data[:cut])
                        self.wfile.flush()
                        proxy.is_down = True  # the server is gone from now on
                        proxy.hits.append(f"{self.command} {self.path} -> cut after {cut} bytes, then down")
                        self.close_connection = True
                        return
                    self.wfile.write(data)
                    proxy.hits.append(f"{self.command} {self.path} -> {r.status}")
                    return
                self.end_headers()
                sent = 0
                while self.command != "HEAD":
                    chunk = r.read(1 << 16)
                    if not chunk:
                        break
                    if cut is not None and sent + len(chunk) >= cut:
                        self.wfile.write(chunk[: cut - sent])
                        self.wfile.flush()
                        proxy.is_down = True  # the server is gone from now on
                        proxy.hits.append(f"{self.command} {self.path} -> cut after {cut} bytes, then down")
                        self.close_connection = True
                        conn.close()
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                conn.close()
                proxy.hits.append(f"{self.command} {self.path} -> {r.status}")

            do_GET = do_HEAD = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def on(self, path_regex: str, action: tuple) -> FaultProxy:
        self.rules.append((re.compile(path_regex), action))
        return self

    def reset(self) -> FaultProxy:
        self.rules.clear()
        self.is_down = False
        return self

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
