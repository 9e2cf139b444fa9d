"""An HTTP proxy in front of the moto S3 server that counts, delays and breaks requests.

It measures what the client really does (requests in flight at once, whether requests
are signed), models a distant store (``latency`` per request, ``bandwidth`` per
connection), makes conditional writes atomic as S3 does (moto checks ``If-None-Match``
and then writes, in two steps, so two racing conditional PUTs could both succeed
there), and injects faults: the *first* attempt of a chosen share of requests gets
a 503 SlowDown or a dropped connection, so a client that retries always succeeds, and
one that does not always fails.  Every loop is bounded: it serves until ``close()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class ProxyState:
    upstream: tuple[str, int]
    fail_503: float = 0.0  #: share of distinct requests whose first attempt gets a 503
    fail_drop: float = 0.0  #: share whose first attempt has its connection dropped
    latency: float = 0.0  #: seconds added before each response
    bandwidth: float = 0.0  #: bytes per second of one connection (request and response bodies); 0: no cap
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    faults: int = 0
    faults_503: int = 0
    signed: int = 0
    unsigned: int = 0
    paths: list[str] = field(default_factory=list)
    _tried: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Held while a conditional write (``If-None-Match`` / ``If-Match``) is checked and done upstream.
    conditional: threading.Lock = field(default_factory=threading.Lock)

    def fault_for(self, key: str) -> str | None:
        """The fault for this request, decided by a hash: the same request fails once."""
        with self.lock:
            if key in self._tried:
                return None
            self._tried.add(key)
        share = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32
        if share < self.fail_503:
            return "503"
        if share < self.fail_503 + self.fail_drop:
            return "drop"
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _proxy(self) -> None:
        state = self.server.state
        body = self._body()
        key = f"{self.command} {self.path} {self.headers.get('Range', '')}"
        with state.lock:
            state.requests += 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            state.paths.append(f"{self.command} {self.path}")
            if self.headers.get("Authorization"):
                state.signed += 1
            else:
                state.unsigned += 1
        try:
            if state.latency:
                time.sleep(state.latency)
            fault = state.fault_for(key)
            if fault:
                with state.lock:
                    state.faults += 1
                    state.faults_503 += fault == "503"
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "503":
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOW_DOWN)))
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer has no body
                    self.wfile.write(SLOW_DOWN)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            conditional = self.command == "PUT" and ("If-None-Match" in self.headers or "If-Match" in self.headers)
            upstream = http.client.HTTPConnection(*state.upstream, timeout=60)
            try:
                with state.conditional if conditional else contextlib.nullcontext():
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
            finally:
                upstream.close()
            if state.bandwidth:  # one connection moves its bodies at this rate
                time.sleep((len(body or b"") + len(data)) / state.bandwidth)
            self.send_response(response.status)
            skip = ("transfer-encoding", "connection", "date", "server")
            if self.command != "HEAD":  # a HEAD answer keeps the object's Content-Length
                skip += ("content-length",)
            for name, value in response.getheaders():
                if name.lower() not in skip:
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            with state.lock:
                state.in_flight -= 1

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _proxy


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ProxyState


class S3Proxy:
    """A running proxy; ``url`` is its endpoint."""

    def __init__(self, upstream: tuple[str, int], **faults) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = ProxyState(upstream=upstream, **faults)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}"

    @property
    def state(self) -> ProxyState:
        return self.server.state

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
