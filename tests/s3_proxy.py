"""An HTTP proxy in front of the moto S3 server that counts, delays and breaks requests.

It measures what the client really does (requests in flight at once, in all and per
HTTP method, whether requests are signed), models a distant store (``latency`` per
request, ``bandwidth`` per connection, a share of ``slow`` GETs held longer), makes
conditional writes atomic as S3 does (moto checks ``If-None-Match`` and then writes, in
two steps, so two racing conditional PUTs could both succeed there), and injects
faults: the *first* attempt of a chosen share of requests gets a 503 SlowDown, a
dropped connection, or a body cut short mid-transfer, so a client that retries always
succeeds, and one that does not always fails.  ``faults_for`` limits the faults to some
requests (``upload_part``: only UploadPart), and ``hang`` picks one request that never
answers (:func:`nth_ranged_get`, :func:`part`).  Every loop is bounded: it serves until
``close()``, which also releases held requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def upload_part(command: str, path: str, range_: str = "") -> bool:
    """A ``faults_for`` filter: only UploadPart requests."""
    return command == "PUT" and "partNumber=" in path and "uploadId=" in path


def part(number: int) -> Callable[[str, str, str], bool]:
    """A ``hang`` rule: the upload of part ``number``."""
    return lambda command, path, range_: upload_part(command, path) and f"partNumber={number}" in path.split("&")


def nth_ranged_get(n: int) -> Callable[[str, str, str], bool]:
    """A ``hang`` rule: the ``n``-th ranged GET (1-based) that the proxy sees."""
    seen = [0]

    def rule(command: str, path: str, range_: str) -> bool:
        if command == "GET" and range_:
            seen[0] += 1
            return seen[0] == n
        return False

    return rule


@dataclass
class ProxyState:
    upstream: tuple[str, int]
    fail_503: float = 0.0  #: share of distinct requests whose first attempt gets a 503
    fail_drop: float = 0.0  #: share whose first attempt has its connection dropped
    latency: float = 0.0  #: seconds added before each response
    bandwidth: float = 0.0  #: bytes per second of one connection (request and response bodies); 0: no cap
    fail_cut: float = 0.0  #: share whose first attempt gets half its body, then a closed connection
    #: share of ranged GET requests held ``slow_seconds`` longer, each request drawn on its
    #: own as S3's slow tail is (a request sent again is as likely to be fast as any other)
    slow: float = 0.0
    slow_seconds: float = 2.0
    #: instead, a share of ranges slow at every attempt (a slow server: a hedge cannot win)
    slow_every_attempt: bool = False
    #: (method, path, Range) -> whether this request never answers (the first that matches only)
    hang: Callable[[str, str, str], bool] | None = None
    faults_for: Callable[[str, str], bool] | None = None  #: which requests may get a fault (None: all)
    #: answer 412 to a GET whose If-Match is not an entity tag (quoted, RFC 9110), as
    #: nginx serving files does; S3 takes an unquoted one
    strict_if_match: bool = False
    if_match: list[str] = field(default_factory=list)  #: the If-Match of every GET, as sent
    #: The client of each ranged GET, by the first word of its User-Agent
    #: (``object_store`` for obstore, ``aiobotocore`` or ``Botocore`` for s3fs)
    ranged_get_clients: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    #: per HTTP method (and "UploadPart" for those PUTs, counted apart from other PUTs), now
    in_flight_by: dict[str, int] = field(default_factory=dict)
    max_in_flight_by: dict[str, int] = field(default_factory=dict)  #: the same, most at once
    faults: int = 0
    faults_503: int = 0
    cuts: int = 0
    slowed: int = 0
    hung: int = 0
    ranged_gets: int = 0
    #: bytes of ranged GET bodies the proxy sent or began to send (hedges, retries and
    #: cancelled requests included), and each distinct request's body size: the bytes
    #: the build needed once, so that their difference is what went over the wire again
    ranged_get_bytes: int = 0
    ranged_get_sizes: dict[str, int] = field(default_factory=dict)
    signed: int = 0
    unsigned: int = 0
    paths: list[str] = field(default_factory=list)
    _tried: set[str] = field(default_factory=set)
    _attempts: dict[str, int] = field(default_factory=dict)  #: ranged GETs sent per key, for ``slow``
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)  #: set by close(): held requests end
    #: Held while a conditional write (``If-None-Match`` / ``If-Match``) is checked and done upstream.
    conditional: threading.Lock = field(default_factory=threading.Lock)

    def fault_for(self, key: str, command: str, path: str) -> str | None:
        """The fault for this request, decided by a hash: the same request fails once."""
        if self.faults_for is not None and not self.faults_for(command, path):
            return None
        with self.lock:
            if key in self._tried:
                return None
            self._tried.add(key)
        share = _share(key)
        if share < self.fail_503:
            return "503"
        if share < self.fail_503 + self.fail_drop:
            return "drop"
        if share < self.fail_503 + self.fail_drop + self.fail_cut:
            return "cut"
        return None

    @property
    def extra_get_bytes(self) -> int:
        """Ranged GET bytes sent beyond one answer to each distinct request."""
        return self.ranged_get_bytes - sum(self.ranged_get_sizes.values())

    def is_slow(self, key: str) -> bool:
        """Whether this GET is one of the slow share (by a hash of another salt than faults'
        and, unless ``slow_every_attempt``, of the attempt's number)."""
        if self.slow <= 0:
            return False
        if self.slow_every_attempt:
            return _share("slow " + key) < self.slow
        with self.lock:
            attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        return _share(f"slow {attempt} {key}") < self.slow


def _entity_tag(value: str) -> bool:
    """Whether an If-Match value is ``*`` or a list of entity tags (quoted, maybe weak)."""
    tags = [t.strip().removeprefix("W/") for t in value.split(",")]
    return value.strip() == "*" or all(len(t) >= 2 and t[0] == t[-1] == '"' for t in tags)


def _share(key: str) -> float:
    """A number in [0, 1) fixed by ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32


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
        command = self.command
        operation = "UploadPart" if upload_part(command, self.path) else command
        ranged = command == "GET" and bool(self.headers.get("Range"))
        # The upload's id is new at every run: left out, the same parts get the same faults.
        key = f"{command} {re.sub(r'uploadId=[^&]*', 'uploadId=', self.path)} {self.headers.get('Range', '')}"
        hang = False
        with state.lock:
            state.requests += 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            now = state.in_flight_by[operation] = state.in_flight_by.get(operation, 0) + 1
            state.max_in_flight_by[operation] = max(state.max_in_flight_by.get(operation, 0), now)
            state.paths.append(f"{command} {self.path}")
            if self.headers.get("Authorization"):
                state.signed += 1
            else:
                state.unsigned += 1
            if ranged:
                state.ranged_gets += 1
                client = self.headers.get("User-Agent", "").split("/", 1)[0]
                state.ranged_get_clients[client] = state.ranged_get_clients.get(client, 0) + 1
            if command == "GET" and "If-Match" in self.headers:
                state.if_match.append(self.headers["If-Match"])
            if state.hang is not None and not state.hung:
                hang = state.hang(command, self.path, self.headers.get("Range", ""))
                state.hung += hang
        try:
            if hang:  # never answers (until the proxy closes)
                state.released.wait()
                self.close_connection = True
                return
            if state.latency:
                time.sleep(state.latency)
            if state.strict_if_match and command == "GET" and not _entity_tag(self.headers.get("If-Match", "*")):
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            fault = state.fault_for(key, command, self.path)
            if fault:
                with state.lock:
                    state.faults += 1
                    state.faults_503 += fault == "503"
                    state.cuts += fault == "cut"
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
            if ranged:
                with state.lock:
                    state.ranged_get_bytes += len(data)
                    state.ranged_get_sizes[key] = len(data)
            if ranged and state.is_slow(key):
                with state.lock:
                    state.slowed += 1
                state.released.wait(state.slow_seconds)
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
            if fault == "cut" and len(data) > 1:  # half the promised body, then the connection goes
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client went away (a hedged GET cancelled, say)
            self.close_connection = True
        finally:
            with state.lock:
                state.in_flight -= 1
                state.in_flight_by[operation] -= 1

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
        self.server.state.released.set()
        self.server.shutdown()
        self.server.server_close()
