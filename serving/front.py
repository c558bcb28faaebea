"""Validating HTTP front for ``serving.serve``: the public HTTP port, in front of Triton on a private loopback port.

Why it exists: the bundled Triton (2.51) allocates what a JSON request *declares* before it looks at the data,
so one 95-byte request declaring shape [1, 1000000, 1000000, 3] aborts the whole server (``std::bad_alloc``);
no code inside the model can catch that. This front reads every request first and answers what the model
cannot serve itself, with a 4xx status and a one-line JSON body ``{"error": "..."}`` (never a traceback):

- 411/413/415 before the body is read, from its headers: no Content-Length (chunked), a body over
  ``max_body_bytes``, a JSON-encoded body (no ``Inference-Header-Content-Length``) over ``max_json_bytes`` (use
  binary tensors for large images; the client does), or a compressed body;
- 400: an inference header that is not KServe v2 JSON for this model: one input ``image``, datatype UINT8,
  shape [N, H, W, 3] with 1 <= N <= max_batch and H, W >= ``min_side``; data that does not match the shape
  (JSON ``data`` must hold exactly N*H*W*3 integers 0-255; a binary tensor must declare ``binary_data_size``
  N*H*W*3 and the body must hold exactly that many bytes after the ``Inference-Header-Content-Length``
  header); shared-memory tensors and unknown parameters;
- 413: an image over ``max_pixels`` pixels (H*W);
- 404: another model, or any endpoint other than inference, health and model metadata/config/ready/stats
  (model loading, logging, tracing and shared-memory registration stay private); 400: a percent-encoded path
  (``%XX``): what is checked is what Triton gets, so ``b%61net`` or ``%2e%2e`` never reach it; 400: a model
  version not in ASCII digits (``versions/²``);
- 408: a request not received whole (request line, headers and body) within ``request_timeout_s`` of its first
  byte (of the connection's opening, for its first request): a client sending a byte at a time (slowloris) or
  never finishing its body gets 408 and is disconnected, freeing its connection slot. The clock stops once the
  body is read (waiting for the model and computing do not count; those are ``deadline_s`` and
  ``upstream_timeout_s``) and pauses while the request waits for room in ``max_inflight_bytes``. Between
  requests a kept-alive connection may stay silent for ``idle_timeout_s``;
- a response not read whole by the client within ``response_timeout_s`` of its start (a client reading a
  byte at a time, or not at all, through a small TCP receive window): the connection is reset, freeing its slot,
  and one line is logged (there is no status left to send: the answer has begun);
- 503 with Retry-After: too many connections, too many request bytes already in flight
  (``max_inflight_bytes``: bytes received, held from each chunk's arrival to the answer, so a Content-Length that
  is never sent holds nothing), the model's queue full (``queue_size``), or a request that would not be answered
  within its deadline (``deadline_s`` from its arrival, predicted from the model's measured speed).

Overload: valid inference requests wait in one FIFO queue (:class:`AdmissionQueue`) and go to Triton together
only up to ``batch_pixels`` pixels (one big image alone), so abandoned work never piles up inside Triton: a
request whose client has hung up while it waited, or that can no longer make its deadline, is dropped before it
is computed. Once a request is given to the model it is computed to the end (Triton cannot cancel it). After a
large request the process hands freed memory back to the system (:func:`release_memory`).

A client that resets its connection (or breaks it, or times out) is one debug line in the log, never a traceback;
other errors on a connection are logged with theirs.

Good requests are forwarded byte for byte. Triton's own error bodies are reduced to one line: the infer
function tags its errors with :func:`error_tag` so the reason and status survive PyTriton's traceback
wrapping; any other traceback becomes "internal error" (details stay in the server log).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import http.client
import io
import json
import logging
import math
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.request_rules import (
    _GET_PATHS,
    _MODEL_PATH,
    DRAIN_LIMIT,
    MB,
    FrontLimits,
    RequestError,
    _printable,
    check_infer_request,
    clean_upstream_error,
    one_line,
    plain_int,
    scrub_config,
)

log = logging.getLogger(__name__)
#: Bodies and images at least this large are followed by :func:`release_memory`.
LARGE_BYTES = 8 * MB
#: Retry-After (s) when no better estimate exists (connection cap, byte budget, a model not yet timed).
RETRY_AFTER_S = 5
#: A request body is read (and held in the byte budget) this much at a time.
BODY_CHUNK = 256 * 1024


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    """Give freed heap memory back to the system after a large request. glibc keeps freed blocks of large
    decodes and model activations in its arenas, so without this the process stays at its peak size."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class ClientGone(Exception):
    """The client hung up (while its request waited, or while it sent it); nothing is computed or answered. The
    message says when, e.g. "while sending its body (connection reset)"."""


#: Client-side connection failures: a reset, a broken pipe, a timeout. Logged in one line, never a traceback.
CLIENT_ERRORS = (ConnectionError, TimeoutError)


def _os_error(exc: BaseException) -> str:
    """A short name for a connection failure: 'connection reset', 'broken pipe', 'timed out'..."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return one_line(text, limit=80).lower()


@dataclass(eq=False)
class _Ticket:
    pixels: int
    deadline: float
    arrived: float
    started: float | None = None
    #: pixels of every request running when this one started (itself included): they run as one batch
    together: int = 0


class AdmissionQueue:
    """The front's queue for the model: FIFO, at most ``queue_size`` requests waiting. Requests run together up to
    ``batch_pixels`` pixels (a bigger one runs alone). Each waiting request is dropped as soon as its client is gone
    or it cannot be answered by its deadline, predicted with the model's measured seconds per pixel; a request is
    refused at once (503 + Retry-After) when the queue is full or that prediction already fails."""

    def __init__(self, queue_size: int, batch_pixels: int, clock: Callable[[], float] = time.monotonic,
                 poll_s: float = 0.25) -> None:
        self.queue_size = queue_size
        self.batch_pixels = batch_pixels
        self.seconds_per_pixel: float | None = None  # None until a request of at least MIN_TIMED_PIXELS ran
        self._clock = clock
        self._poll_s = poll_s
        self._cond = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._running: list[_Ticket] = []

    MIN_TIMED_PIXELS = 64 * 1024  # smaller requests time mostly overhead, not pixels

    def estimate(self, pixels: int) -> float | None:
        """Predicted model seconds for ``pixels``, or None before anything large enough was timed."""
        return None if self.seconds_per_pixel is None else self.seconds_per_pixel * pixels

    def observe(self, pixels: int, seconds: float) -> None:
        """Fold one measured request into the speed estimate (moving average, recent requests weigh half)."""
        if pixels >= self.MIN_TIMED_PIXELS:
            rate = seconds / pixels
            with self._cond:
                old = self.seconds_per_pixel
                self.seconds_per_pixel = rate if old is None else 0.5 * old + 0.5 * rate

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def _backlog_s(self, now: float, ahead: list[_Ticket]) -> float | None:
        """Predicted seconds until the running requests and ``ahead`` are done (None: not timed yet)."""
        if self.seconds_per_pixel is None:
            return None
        # Requests running together form one batch: it ends when its slowest member's batch is done.
        running = max((self.estimate(t.together) - (now - t.started) for t in self._running), default=0.0)
        return max(0.0, running) + sum(self.estimate(t.pixels) for t in ahead)

    def _retry_after(self, now: float) -> int:
        """Seconds until the model is predicted to be free of what runs now (waiting requests that cannot make
        their deadlines are dropped, so they are not counted)."""
        backlog = self._backlog_s(now, [])
        return RETRY_AFTER_S if backlog is None else max(1, math.ceil(backlog))

    def _fits(self, ticket: _Ticket) -> bool:
        return not self._running or (sum(t.pixels for t in self._running) + ticket.pixels <= self.batch_pixels)

    def _check_deadline(self, ticket: _Ticket, now: float) -> None:
        ahead = self._waiting[:self._waiting.index(ticket)] if ticket in self._waiting else self._waiting
        backlog, own = self._backlog_s(now, ahead), self.estimate(ticket.pixels)
        if backlog is None:
            if now >= ticket.deadline:
                raise RequestError(503, "server busy: the request waited its whole deadline for the model; "
                                        "retry later", self._retry_after(now))
            return
        finish = now + (0.0 if not ahead and self._fits(ticket) else backlog) + own
        if finish > ticket.deadline:
            if own > ticket.deadline - ticket.arrived:
                raise RequestError(503, f"this request would take about {own:.0f} s on the model, beyond the "
                                        f"server's deadline of {ticket.deadline - ticket.arrived:.0f} s; send a "
                                        "smaller image")
            raise RequestError(503, f"server busy: the request would be answered in about {finish - now:.0f} s more, "
                                    f"after its deadline ({ticket.deadline - ticket.arrived:.0f} s from its arrival); "
                                    "retry later", self._retry_after(now))

    @contextmanager
    def slot(self, pixels: int, deadline: float, client_gone: Callable[[], bool]) -> Iterator[None]:
        """Wait in line for the model; the body runs the request. Raises RequestError 503 (queue full, deadline)
        or :class:`ClientGone`; times the body to learn the model's speed."""
        with self._cond:
            now = self._clock()
            ticket = _Ticket(pixels, deadline, now)
            if self._waiting or not self._fits(ticket):
                if len(self._waiting) >= self.queue_size:
                    raise RequestError(503, f"server busy: {len(self._waiting)} requests already wait for the model; "
                                            "retry later", self._retry_after(now))
            self._check_deadline(ticket, now)
            self._waiting.append(ticket)
            try:
                while True:
                    if client_gone():
                        raise ClientGone
                    now = self._clock()
                    self._check_deadline(ticket, now)
                    if self._waiting[0] is ticket and self._fits(ticket):
                        break
                    self._cond.wait(self._poll_s)
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()
            ticket.started = now
            self._running.append(ticket)
            ticket.together = sum(t.pixels for t in self._running)
        try:
            yield
        finally:
            seconds = self._clock() - ticket.started
            with self._cond:
                self._running.remove(ticket)
                self._cond.notify_all()
            self.observe(ticket.together, seconds)  # the batch's time was spent on all its pixels


def free_port(host: str = "127.0.0.1", taken: Collection[int] = ()) -> int:
    """A port nobody listens on now (the OS picks it), none of ``taken`` (ports already handed out for others)."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def bind_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on now (busy, no such address), or None: servers check their ports
    before starting anything slow, so a busy one fails fast in one line."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return str(exc.strerror or exc)
    return None


def client_gone(sock: socket.socket) -> bool:
    """True when the peer has closed the connection: readable, and a peek reads end-of-file (or fails). A client
    that sent more data (a pipelined request) is not gone."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class RequestDeadline(TimeoutError):
    """Receiving one request took longer than the front's ``request_timeout_s``."""


class DeadlineReader(io.RawIOBase):
    """A connection's input with a whole-request deadline: each receive waits at most ``idle_s`` and at most until
    the running request's deadline, ``request_s`` after its clock started. The clock of a connection's first
    request starts when the reader is made (at accept); later ones start at their first byte. :meth:`stop` stops
    it once a request is read, so the time spent answering is not the client's."""

    def __init__(self, sock: socket.socket, idle_s: float | None, request_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._sock, self._clock = sock, clock
        self.idle_s, self.request_s = idle_s, request_s
        self.deadline: float | None = clock() + request_s
        self.received = 0  # bytes of the running request received (0: nothing yet, the client was silent)
        self.timed_out = False  # a receive of the running request timed out (idle or deadline)
        self.expired = False  # ... because the request's deadline passed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        timeout, by_deadline = self.idle_s, False
        if self.deadline is not None:
            left = self.deadline - self._clock()
            if left <= 0:
                self.timed_out = self.expired = True
                raise RequestDeadline(f"request not received within {self.request_s:g} s")
            if timeout is None or left < timeout:
                timeout, by_deadline = left, True
        try:
            self._sock.settimeout(timeout)
            count = self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            if by_deadline:
                self.expired = True
                raise RequestDeadline(f"request not received within {self.request_s:g} s") from None
            raise
        finally:
            self._sock.settimeout(self.idle_s)  # writes keep the idle timeout
        if count and self.deadline is None:
            self.deadline = self._clock() + self.request_s  # a new request's first bytes: its clock starts
        self.received += count
        return count

    def extend(self, seconds: float) -> None:
        """Give the running request ``seconds`` more (time the server made it wait)."""
        if self.deadline is not None:
            self.deadline += seconds

    def stop(self) -> None:
        """The request is read: stop its clock; the next one's starts at its first byte."""
        self.deadline, self.received, self.timed_out, self.expired = None, 0, False, False


class ResponseDeadline(TimeoutError):
    """Writing one response took longer than the front's ``response_timeout_s``."""


class DeadlineWriter(io.RawIOBase):
    """A connection's output with a whole-response deadline: :meth:`start` starts the clock of a response, and every
    send of it waits at most until ``response_s`` after that (and at most ``idle_s`` for room); :meth:`stop` ends it.
    A socket timeout bounds only each call, so a client reading a byte at a time could otherwise hold the
    connection for ``idle_s`` per write (headers, then body), response after response."""

    def __init__(self, sock: socket.socket, idle_s: float | None, response_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._sock, self._clock = sock, clock
        self.idle_s, self.response_s = idle_s, response_s
        self.deadline: float | None = None
        self.sent = 0  # bytes of the running response handed to the kernel
        self.expired = False  # the running response missed its deadline

    def writable(self) -> bool:
        return True

    def start(self) -> None:
        self.deadline, self.sent, self.expired = self._clock() + self.response_s, 0, False

    def stop(self) -> None:
        self.deadline = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        try:
            while view:
                timeout, by_deadline = self.idle_s, False
                if self.deadline is not None:
                    left = self.deadline - self._clock()
                    if left <= 0:
                        self.expired = True
                        raise ResponseDeadline(f"response not read within {self.response_s:g} s")
                    if timeout is None or left < timeout:
                        timeout, by_deadline = left, True
                self._sock.settimeout(timeout)
                try:
                    count = self._sock.send(view)
                except TimeoutError:
                    if by_deadline:
                        self.expired = True
                        raise ResponseDeadline(f"response not read within {self.response_s:g} s") from None
                    raise
                view = view[count:]
                self.sent += count
        finally:
            self._sock.settimeout(self.idle_s)
        return size


def _reset_on_close(sock: socket.socket) -> None:
    """Make closing reset the connection (SO_LINGER 0): the kernel drops what the client never read, not keeping it
    queued for a reader that does not read."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _budget_busy() -> RequestError:
    return RequestError(503, "server busy with other large requests; retry later", RETRY_AFTER_S)


class _Lease:
    """One request's share of a :class:`_ByteBudget`: it grows as the body arrives (:meth:`grow`), so a client that
    declares a large Content-Length and sends nothing holds nothing; all of it is given back when the request ends."""

    def __init__(self, budget: _ByteBudget, wait_s: float) -> None:
        self._budget, self.wait_s = budget, wait_s
        self.held = 0
        self.waiting = False

    def grow(self, size: int) -> float:
        """Hold ``size`` more bytes (at most the whole budget in all), waiting up to ``wait_s`` for room; return the
        seconds waited. RequestError 503 when no room comes, or at once when every holder waits for room (none of
        them could ever finish)."""
        return self._budget._grow(self, size)


class _ByteBudget:
    """Caps the request bytes held in memory at once: each request holds what it has received (a :class:`_Lease`),
    and waits up to ``wait_s`` for room before it reads more."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._free = total
        self._cond = threading.Condition()
        self._leases: set[_Lease] = set()

    @property
    def free(self) -> int:
        return self._free

    @contextmanager
    def lease(self, wait_s: float) -> Iterator[_Lease]:
        """A request's share, empty at first; given back whole on exit."""
        lease = _Lease(self, wait_s)
        with self._cond:
            self._leases.add(lease)
        try:
            yield lease
        finally:
            with self._cond:
                self._leases.discard(lease)
                self._free += lease.held
                lease.held = 0
                self._cond.notify_all()

    @contextmanager
    def hold(self, size: int, wait_s: float) -> Iterator[None]:
        """Hold ``size`` bytes at once for the body of the ``with`` (waiting up to ``wait_s`` for room)."""
        with self.lease(wait_s) as lease:
            lease.grow(size)
            yield

    def _stuck(self, asking: _Lease) -> bool:
        """Every request holding bytes waits for room: none can finish and give any back (a deadlock)."""
        holders = [lease for lease in self._leases if lease.held]
        return bool(holders) and all(lease.waiting or lease is asking for lease in holders)

    def _grow(self, lease: _Lease, size: int) -> float:
        size = min(size, self._total - lease.held)
        if size <= 0:
            return 0.0
        started = time.monotonic()
        with self._cond:
            end = started + lease.wait_s
            lease.waiting = True
            try:
                while self._free < size:
                    left = end - time.monotonic()
                    if left <= 0 or self._stuck(lease):
                        raise _budget_busy()
                    self._cond.wait(left)
            finally:
                lease.waiting = False
            self._free -= size
            lease.held += size
        return time.monotonic() - started


class FrontServer(ThreadingHTTPServer):
    """The front: one thread per connection, at most ``max_connections`` at once."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], limits: FrontLimits, upstream: tuple[str, int]) -> None:
        self.limits = limits
        self.upstream = upstream
        self.budget = _ByteBudget(limits.inflight_limit)
        self.queue = AdmissionQueue(limits.queue_size, limits.batch_pixels)
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        """socketserver's hook for an exception out of a connection's handler: a client's reset, broken pipe or
        timeout is one debug line (it printed a 19-line traceback to stderr); anything else is logged with its
        traceback, as an error."""
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_ERRORS):
            log.debug("connection from %s ended: %s", client_address[0], _os_error(exc))
        else:
            log.exception("front: unexpected error on a connection from %s", client_address[0])

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse_connection(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def start(self) -> FrontServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="serve-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listening socket; requests still waiting for the model are answered 503 (the
        server is stopping: retry), not 502 (as if it had failed), once the model server behind goes away."""
        self.stopping = True
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def _refuse_connection(sock: socket.socket) -> None:
    _answer_and_close(sock, "503 Service Unavailable", "too many connections; retry later",
                      f"Retry-After: {RETRY_AFTER_S}\r\n")


def _answer_and_close(sock: socket.socket, status: str, message: str, extra_headers: str = "") -> None:
    """A one-line JSON error written straight to the socket (no parsed request to answer through)."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra_headers}Connection: close\r\n\r\n").encode()
    try:
        sock.sendall(head + body)
    except OSError:
        pass


def _deadline_message(seconds: float) -> str:
    return (f"request not received whole within {seconds:g} s (the server's --request-timeout, for the request "
            "line, headers and body together); send it faster")


def _declared_length(headers) -> int | None:
    """A plain, valid Content-Length (no chunking), or None."""
    values = headers.get_all("Content-Length") or []
    if headers.get("Transfer-Encoding") or len(set(values)) != 1:
        return None
    return plain_int(values[0])


class _Handler(BaseHTTPRequestHandler):
    """One client connection (keep-alive): route, check, forward to Triton, clean error bodies."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # so even a garbled request line gets a status line back
    server: FrontServer
    server_version = "banet-front"
    sys_version = ""

    def setup(self) -> None:
        limits = self.server.limits
        self.timeout = limits.idle_timeout_s
        self._upstream_conn: http.client.HTTPConnection | None = None
        self._answered = False
        super().setup()
        self.rfile.close()  # http.server's own reader: replaced by one that keeps the whole-request deadline
        self._reader = DeadlineReader(self.connection, limits.idle_timeout_s, limits.request_timeout_s)
        self.rfile = io.BufferedReader(self._reader)
        self.wfile.close()  # http.server's writer: replaced by one that keeps the whole-response deadline
        self._writer = DeadlineWriter(self.connection, limits.idle_timeout_s, limits.response_timeout_s)
        self.wfile = self._writer

    def handle_one_request(self) -> None:
        """One request; one whose line or headers were cut short by a timeout gets 408 and the connection closes
        (http.server would close it without a word; a silent connection is closed silently)."""
        self._answered = False
        try:
            super().handle_one_request()
        except CLIENT_ERRORS as exc:  # the client reset or dropped the connection between or during requests
            self.close_connection = True
            log.debug("connection from %s ended: %s", self.client_address[0], _os_error(exc))
        reader = self._reader
        if reader.timed_out:
            self.close_connection = True
            if reader.received and not self._answered:
                log.info("refused a request: 408, %s", "deadline" if reader.expired else "idle")
                _answer_and_close(self.connection, "408 Request Timeout",
                                  _deadline_message(reader.request_s) if reader.expired else
                                  f"request not received: the client sent nothing for {reader.idle_s:g} s")
        reader.stop()

    def finish(self) -> None:
        if self._upstream_conn is not None:
            self._upstream_conn.close()
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method...) as one-line JSON too."""
        self.close_connection = True
        if code == 501:  # http.server's answer to a method without a do_ handler
            code, message = 405, f"method {_printable(str(self.command))} not allowed"
        self._send_json_error(code, message or self.responses.get(code, ("error",))[0])

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s %s", self.address_string(), format % args)

    # -- routes ---------------------------------------------------------------------------------------------
    def _guarded(self, handler) -> None:
        self._arrived = time.monotonic()
        self._body_read = False
        self._large = False  # set by a request large enough to hand its memory back after it (answered or not)
        self._unread = _declared_length(self.headers)  # body bytes declared but not read yet
        try:
            self._handled(handler)
        finally:
            if self._large:  # refused ones too: eight refused 30 MiB JSON requests left the process 360 MB larger
                release_memory()

    def _handled(self, handler) -> None:
        try:
            handler()
        except ClientGone as exc:
            # the URL as sent (one_line would write <path> for it), and when it hung up (an exception is always
            # true, so the "while it waited" fallback never showed: the line ended in a blank)
            url = " ".join(self.path.encode("ascii", "backslashreplace").decode().split())[:120]
            log.info("dropped %s %s: the client hung up %s", self.command, url,
                     str(exc) or "while it waited for the model")
            self.close_connection = True
        except RequestError as exc:
            if not self._body_read:
                self._drain_or_close()
            log.info("refused %s: %d %s", self.command, exc.status, exc.message)
            self._send_json_error(exc.status, exc.message, exc.retry_after)
        except Exception:
            log.exception("front: unexpected error")
            self.close_connection = True
            self._send_json_error(500, "internal error in the request front (see the server log)")

    def _get(self) -> None:
        self._body_read = True
        self._reader.stop()
        if self.headers.get("Content-Length", "0") != "0" or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a GET body is not read; do not parse it as the next request
        path = self._route({None, "/ready", "/config", "/stats"}, allow_plain=True)
        self._forward("GET", path, None, {})

    def _post(self) -> None:
        path = self._route({"/infer"}, allow_plain=False)
        length = self._content_length()
        self._large = length >= LARGE_BYTES
        header_length = self._header_length(length)
        limits = self.server.limits
        if header_length is None and length > limits.max_json_bytes:
            raise RequestError(413, f"JSON request of {length} bytes is over the {limits.max_json_bytes} byte limit "
                                    "for JSON data; send the image as a binary tensor")
        with self.server.budget.lease(limits.busy_wait_s) as lease:
            body = self._read_body(length, lease)
            pixels = check_infer_request(body, header_length, limits)
            headers = {k: self.headers[k] for k in ("Content-Type",) if self.headers.get(k)}
            if header_length is not None:
                headers["Inference-Header-Content-Length"] = str(header_length)
            with self.server.queue.slot(pixels, self._arrived + limits.deadline_s,
                                        lambda: client_gone(self.connection)):
                answer = self._exchange("POST", path, body, headers)
            del body
        self._reply("POST", path, *answer)
        del answer
        self._large = self._large or pixels * 3 >= LARGE_BYTES

    def _route(self, suffixes: set[str | None], allow_plain: bool) -> str:
        """The upstream path for this request, or RequestError 404."""
        path = self.path.split("?", 1)[0]
        if "%" in path:  # Triton gets the path as sent: what is checked must be what it reads, undecoded
            raise RequestError(400, "percent-encoded URL paths (%XX) are not accepted; write the model name and "
                                    f"version as they are (this server serves '{self.server.limits.model}')")
        if allow_plain and path in _GET_PATHS:
            return path
        match = _MODEL_PATH.match(path)
        if not match or match.group(3) not in suffixes:
            raise RequestError(404, "no such endpoint; this server offers inference, model metadata and health "
                                    "checks (KServe v2 HTTP)")
        model, version = match.group(1), match.group(2)
        if model != self.server.limits.model:
            raise RequestError(404, f"unknown model '{_printable(model)}'; this server serves "
                                    f"'{self.server.limits.model}'")
        if version is not None and not (version.isascii() and version.isdigit()):  # isdigit alone takes '²'
            raise RequestError(400, f"model version must be a number in ASCII digits, got '{_printable(version)}'")
        return path

    # -- body -----------------------------------------------------------------------------------------------
    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "chunked request bodies are not accepted; send Content-Length")
        if self.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise RequestError(415, "compressed request bodies are not accepted")
        values = set(self.headers.get_all("Content-Length") or [])
        if not values:
            raise RequestError(411, "Content-Length required")
        length = plain_int(next(iter(values))) if len(values) == 1 else None
        if length is None:
            raise RequestError(400, "invalid Content-Length")
        if length > self.server.limits.body_limit:
            raise RequestError(413, f"request body of {length} bytes is over the server's limit of "
                                    f"{self.server.limits.body_limit} bytes")
        return length

    def _header_length(self, length: int) -> int | None:
        value = self.headers.get("Inference-Header-Content-Length")
        if value is None:
            return None
        header_length = plain_int(value)
        if header_length is None:
            raise RequestError(400, "invalid Inference-Header-Content-Length")
        if header_length > length or header_length > self.server.limits.max_header_bytes:
            raise RequestError(400, f"Inference-Header-Content-Length {header_length} is over the body length "
                                    f"or the {self.server.limits.max_header_bytes} byte header limit")
        return header_length

    def _drain_or_close(self) -> None:
        """After an early refusal: read and drop a moderate body so the client sees the answer, else hang up."""
        if self._unread is None or self._unread > DRAIN_LIMIT:
            self.close_connection = True
            return
        left = self._unread
        try:
            while left:
                chunk = self.rfile.read(min(left, MB))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass
        self.close_connection = bool(left)

    def _read_body(self, length: int, lease: _Lease) -> bytearray:
        """The body, read in chunks of :data:`BODY_CHUNK`, each held in ``lease`` before it is read: the byte budget
        counts what arrived, not what the Content-Length claims. RequestError 408 (too slow), 400 (cut short),
        503 (no room); :class:`ClientGone` for a connection reset."""
        body = bytearray()
        try:
            while len(body) < length:
                size = min(BODY_CHUNK, length - len(body))
                self._reader.extend(lease.grow(size))  # the wait for room was the server's, not the client's
                chunk = self.rfile.read(size)
                if not chunk:
                    break
                body += chunk
                self._unread = length - len(body)
        except TimeoutError as exc:
            self._unread = None  # not drained: close the connection
            raise RequestError(408, _deadline_message(self._reader.request_s) if isinstance(exc, RequestDeadline)
                               else "timed out reading the request body") from None
        except OSError as exc:
            self._unread = None
            raise ClientGone(f"while sending its body ({_os_error(exc)})") from None
        if len(body) != length:
            self._unread = None
            raise RequestError(400, f"request body ended after {len(body)} of {length} bytes")
        self._body_read = True
        self._reader.stop()  # received: the time spent answering is not the client's
        return body

    # -- upstream -------------------------------------------------------------------------------------------
    def _forward(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> None:
        self._reply(method, path, *self._exchange(method, path, body, headers))

    def _reply(self, method: str, path: str, status: int, response_headers: list[tuple[str, str]],
               data: bytes) -> None:
        """Triton's answer to the client: errors reduced to one line, configs without paths."""
        if status >= 400:
            status, message = clean_upstream_error(status, data)
            self._send_json_error(status, message)
            return
        keep = {k: v for k, v in response_headers if k.lower() in ("content-type", "inference-header-content-length")}
        if method == "GET" and path.endswith("/config"):
            data = scrub_config(data)
        self._send(status, data, keep)

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to Triton; a kept-alive connection that Triton closed is retried once on a fresh one."""
        for attempt in range(2):
            reused = self._upstream_conn is not None
            conn = self._upstream()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except TimeoutError:
                self._drop_upstream()
                raise RequestError(504, "the model did not answer within "
                                        f"{self.server.limits.upstream_timeout_s:.0f} s") from None
            except (OSError, http.client.HTTPException):
                self._drop_upstream()
                if getattr(self.server, "stopping", False):
                    raise RequestError(503, "the server is stopping; retry (on its replacement)",
                                       RETRY_AFTER_S) from None
                if not reused or attempt:
                    raise RequestError(502, "the inference server is not available") from None
        raise AssertionError("unreachable")

    def _upstream(self) -> http.client.HTTPConnection:
        if self._upstream_conn is None:
            host, port = self.server.upstream
            self._upstream_conn = http.client.HTTPConnection(host, port,
                                                             timeout=self.server.limits.upstream_timeout_s)
        return self._upstream_conn

    def _drop_upstream(self) -> None:
        if self._upstream_conn is not None:
            self._upstream_conn.close()
            self._upstream_conn = None

    # -- responses ------------------------------------------------------------------------------------------
    def _send_json_error(self, status: int, message: str, retry_after: int | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self._send(status, json.dumps({"error": one_line(message)}).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """One response, written whole within ``response_timeout_s`` (headers and body together); a client too slow
        to read it loses its connection (reset, one line logged)."""
        writer = self._writer
        writer.start()
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self._answered = True
            if self.command != "HEAD":
                self.wfile.write(body)
        except ResponseDeadline:
            self.close_connection = True
            log.info("closed a connection from %s: its %d response (%d-byte body) not read whole within %g s "
                     "(--response-timeout; %d bytes sent)", self.client_address[0], status, len(body),
                     writer.response_s, writer.sent)
            _reset_on_close(self.connection)
        except OSError:
            self.close_connection = True
        finally:
            writer.stop()


def start_front(host: str, port: int, limits: FrontLimits, upstream: tuple[str, int]) -> FrontServer:
    """Bind the front on ``host:port`` and serve in a background thread."""
    server = FrontServer((host, port), limits, upstream).start()
    log.info("validating front on http://%s:%d -> Triton http://%s:%d", host, server.port, *upstream)
    return server
