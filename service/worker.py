"""The gunicorn worker of the decision service: every request is read asynchronously, with deadlines, and only
a complete one reaches the app, which then runs synchronously, one request at a time per worker.

Why: gunicorn's sync worker reads a request itself, so a client that sends its headers one byte every 0.5 s
holds a whole worker for as long as it likes; two such connections (no key needed) stalled both workers of a
2-core host (issue 15). Here each worker process runs an event loop (gunicorn's own tornado worker,
gunicorn.workers.gtornado, with tornado's HTTP/1.1 server) that reads any number of connections side by side
and gives up on a slow one:

- the request line and headers must arrive within RETENTION_HEADER_TIMEOUT seconds (default 5) of the
  connection's start or of the previous response on it; the same deadline closes a kept-alive connection left
  idle (tornado's `idle_connection_timeout` is both);
- the body within RETENTION_BODY_TIMEOUT seconds (default 5) of its headers;
- the header section is at most RETENTION_MAX_HEADER_BYTES (default 16 KiB; more and the connection is
  closed); gunicorn's `limit_request_*` settings do not apply to this worker;
- the body at most the app's own MAX_CONTENT_LENGTH (RETENTION_MAX_BODY_BYTES, 1 MiB): a larger declared
  Content-Length is answered by the app itself (its JSON 413) without reading the body, and the connection is
  then closed; a chunked body over it is a 400 from tornado.

The app runs on the loop's thread, as tornado's WSGIContainer does without an executor, but this module calls
it itself: a decision is a few milliseconds of CPU, so one at a time per worker (one worker per core) is the
right concurrency, and no thread pool or thread-safety question is added. WSGIContainer is not used because it
logs the request line of every 4xx and 5xx answer (paths carry customer ids) to `tornado.access`, turns an app exception into a hung
connection, drops a chunked body (no CONTENT_LENGTH) and cannot answer 413 before reading a body.

gunicorn's TornadoWorker is kept for its signal handling (SIGQUIT/SIGINT: exit now; SIGTERM: graceful, here
through the loop) and the parent check; `run` is replaced to pass the settings above, to notify the master
(gunicorn's `timeout`) once a second while the loop is free, to count `max_requests` per request (gunicorn's
counts closed connections) and to stop gracefully: stop accepting at once, turn keep-alive off, let every
request already being read or answered finish and every just-accepted connection send its first request (up
to the header deadline; all within `graceful_timeout`), then close the kept-alive connections idle between
requests. (TornadoWorker's own run() stops the loop one tick after it stops the server, cutting requests
still in flight: benoitc/gunicorn issue 2672.) Its setup() hook, which gunicorn runs when it loads the worker class, only patches the Server
header of tornado.web handlers, which this worker does not use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import signal
import sys
import time
from email.utils import formatdate
from http import HTTPStatus

from gunicorn.sock import ssl_context
from gunicorn.workers.base import Worker
from gunicorn.workers.gtornado import TornadoWorker
from tornado import escape, httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.wsgi import to_wsgi_str

DEFAULT_HEADER_TIMEOUT_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 5.0
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
TICK_S = 1.0


def _setting(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


class _Request(httputil.HTTPMessageDelegate):
    """One request on one connection: buffered by tornado, then answered by the app."""

    def __init__(self, server: _WSGIServer, server_conn: object, conn: httputil.HTTPConnection) -> None:
        self.server = server
        self.server_conn = server_conn
        self.conn = conn
        self.request: httputil.HTTPServerRequest | None = None
        self.chunks: list[bytes] = []
        self.too_large: int | None = None  # the declared Content-Length, when over the limit

    def headers_received(self, start_line, headers):
        self.request = httputil.HTTPServerRequest(connection=self.conn, start_line=start_line, headers=headers)
        self.server.busy.add(self.server_conn)
        try:
            declared = int(headers.get("Content-Length", "0"))
        except ValueError:
            declared = 0  # tornado refuses it (400) before the body
        if declared > self.server.max_body:
            self.too_large = declared
            self._answer(b"")
        return None

    def data_received(self, chunk):
        self.chunks.append(chunk)
        return None

    def finish(self) -> None:
        if self.too_large is None:
            body, self.chunks = b"".join(self.chunks), []
            self._answer(body)

    def on_connection_close(self) -> None:
        self.chunks = []
        self.server.busy.discard(self.server_conn)

    def _answer(self, body: bytes) -> None:
        written = None
        try:
            self.server.worker.handle_request()
            status, headers, out = self.server.call_app(self._environ(body))
            if self.too_large is not None or not self.server.worker.alive:
                # Close after this answer: its body was never read, or the worker is leaving (max_requests,
                # SIGTERM) and the client should take its next request elsewhere, not race the close. tornado
                # then sends "Connection: close" itself; it has no public switch for a decision taken after
                # the headers were read, hence its attribute (tornado is pinned exactly).
                self.conn._disconnect_on_finish = True
            written = self._write(status, headers, out)
        finally:
            # Busy until the answer has left (a graceful stop must not cut a large one to a slow reader).
            if written is None:
                self.server.busy.discard(self.server_conn)
            else:
                written.add_done_callback(lambda _: self.server.busy.discard(self.server_conn))
            self.server.served.add(self.server_conn)

    def _write(self, status: str, headers: list[tuple[str, str]], body: bytes):
        """Send the answer; returns the future of its write."""
        code_text, _, reason = status.partition(" ")
        code = int(code_text)
        names = {k.lower() for k, _ in headers}
        response = httputil.HTTPHeaders()
        for key, value in headers:
            response.add(key, value)
        if self.request.method == "HEAD" or code in (204, 304) or code < 200:
            body = b""
        elif "content-length" not in names:
            response["Content-Length"] = str(len(body))
        if "date" not in names:
            response["Date"] = formatdate(usegmt=True)
        written = self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", code, reason), response, chunk=body)
        self.conn.finish()
        return written

    def _environ(self, body: bytes) -> dict:
        r = self.request
        host, sep, port = r.host.rpartition(":")
        if not sep or not port.isdigit() or host.endswith(":"):  # no port (or a bare IPv6 address)
            host, port = r.host, "443" if r.protocol == "https" else "80"
        address = getattr(r.connection.context, "address", None)
        environ = {
            "REQUEST_METHOD": r.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": to_wsgi_str(escape.url_unescape(r.path, encoding=None, plus=False)),
            "QUERY_STRING": r.query,
            "RAW_URI": r.uri,
            # The peer's address: tornado's xheaders stay off, so no client can set it with X-Forwarded-For
            # (RETENTION_TRUSTED_PROXIES does that in the app, for the proxies it is told to trust).
            "REMOTE_ADDR": r.remote_ip,
            "REMOTE_PORT": str(address[1]) if isinstance(address, tuple) and len(address) > 1 else "",
            "SERVER_NAME": host,
            "SERVER_PORT": port,
            "SERVER_PROTOCOL": r.version,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": r.protocol,
            "wsgi.input": io.BytesIO(body),
            # The whole body is in wsgi.input, also when it came chunked (no Content-Length).
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        # tornado accepts no transfer coding but chunked, and a body read in full by the time the app runs.
        chunked = "Transfer-Encoding" in r.headers
        if self.too_large is not None:
            environ["CONTENT_LENGTH"] = str(self.too_large)  # the app refuses it; its body is never read
        elif "Content-Length" in r.headers or chunked:
            environ["CONTENT_LENGTH"] = str(len(body))
        for name in r.headers:
            if "_" in name:
                # HTTP_X_A would be both X-A and X_A: drop the ambiguous form, as gunicorn does by default.
                continue
            value = ",".join(r.headers.get_list(name))
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif key == "CONTENT_LENGTH" or (chunked and key == "TRANSFER_ENCODING"):
                continue
            else:
                environ[f"HTTP_{key}"] = value
        return environ


class _WSGIServer(HTTPServer):
    """tornado's HTTP/1.1 server with this module's request delegate. `busy` holds the connections with a
    request read in part (after its headers) or being answered; `served` those that have been answered at
    least once (so one in `connections` but in neither is new, its first request still to come)."""

    def initialize(self, worker: BufferedSyncWorker, app, max_body: int, **settings) -> None:
        self.worker = worker
        self.app = app
        self.max_body = max_body
        self.busy: set[object] = set()
        self.served: set[object] = set()
        self.connections: set[object] = set()
        super().initialize(self.call_app, max_body_size=max_body, **settings)

    def add_sockets(self, sockets) -> None:
        # One connection per wake-up, not tornado's up to 128: the workers share the listening socket, and a
        # worker that took every waiting connection at once would answer them one after another while the
        # other worker idles (and lose them all if it died). Uses TCPServer's internals (_sockets, _handlers,
        # _handle_connection), as add_sockets does; tornado is pinned exactly.
        loop = IOLoop.current()
        for sock in sockets:
            def accept_one(fd, events, sock=sock) -> None:
                try:
                    connection, address = sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    return
                self._handle_connection(connection, address)

            self._sockets[sock.fileno()] = sock
            loop.add_handler(sock, accept_one, IOLoop.READ)
            self._handlers[sock.fileno()] = functools.partial(loop.remove_handler, sock)

    def start_request(self, server_conn, request_conn):
        self.connections.add(server_conn)
        return _Request(self, server_conn, request_conn)  # never tornado's adapters (xheaders is off)

    def on_close(self, server_conn) -> None:
        self.busy.discard(server_conn)
        self.served.discard(server_conn)
        self.connections.discard(server_conn)
        super().on_close(server_conn)

    def call_app(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
        started: dict = {}
        written: list[bytes] = []

        def start_response(status, headers, exc_info=None):
            if exc_info is not None and started.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            started["status"], started["headers"] = status, list(headers)
            return written.append

        try:
            result = self.app(environ, start_response)
            try:
                for piece in result:
                    if piece:
                        written.append(piece)
            finally:
                if hasattr(result, "close"):
                    result.close()
            if "status" not in started:
                raise RuntimeError("the WSGI app did not call start_response")
        except Exception:
            # Like gunicorn's sync worker: logged (no path: it can carry a customer id), a bare 500 answered.
            self.worker.log.exception("Error handling request")
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            return (f"{status.value} {status.phrase}", [("Content-Type", "text/plain")], status.phrase.encode())
        return started["status"], started["headers"], b"".join(written)


class BufferedSyncWorker(TornadoWorker):
    """gunicorn.conf.py's worker_class: see the module docstring."""

    def init_process(self) -> None:
        # TornadoWorker clears tornado's current IOLoop first (deprecated since tornado 6.2, and warns); a
        # freshly forked worker has none to clear: run() makes a new asyncio loop.
        Worker.init_process(self)

    def handle_request(self) -> None:
        # Per request, unlike TornadoWorker's (per closed connection, which keep-alive makes unbounded).
        self.nr += 1
        if self.alive and self.nr >= self.max_requests:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
            self._stop_accepting()

    def run(self) -> None:
        asyncio.run(self._serve())

    def settings(self) -> dict:
        config = getattr(self.wsgi, "config", None) or {}
        max_body = config.get("MAX_CONTENT_LENGTH") or int(os.environ.get("RETENTION_MAX_BODY_BYTES",
                                                                          DEFAULT_MAX_BODY_BYTES))
        return {
            "max_body": int(max_body),
            "idle_connection_timeout": _setting("RETENTION_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT_S),
            "body_timeout": _setting("RETENTION_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT_S),
            "max_header_size": int(_setting("RETENTION_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES)),
            "no_keep_alive": self.cfg.keepalive <= 0,
            "xheaders": False,
        }

    async def _serve(self) -> None:
        self._wake = asyncio.Event()  # set when the worker is to stop: max_requests reached, SIGTERM
        settings = self.settings()
        if self.cfg.is_ssl:
            settings["ssl_options"] = ssl_context(self.cfg)
        server = _WSGIServer(self, self.wsgi, **settings)
        for sock in self.sockets:
            sock.setblocking(False)
            server.add_socket(sock)
        self.server = server
        # SIGTERM (graceful stop) through the loop, so it starts draining at once rather than at the next tick;
        # SIGQUIT and SIGINT keep gunicorn's handlers (exit now).
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._graceful_stop)
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
        await self._drain(server)

    def _graceful_stop(self) -> None:
        self.handle_exit(signal.SIGTERM, None)
        self._stop_accepting()

    def _stop_accepting(self) -> None:
        # At once, not when the loop next looks: a connection accepted now would only be closed unanswered.
        if getattr(self, "server", None) is not None:
            self.server.stop()
        self._wake.set()

    async def _drain(self, server: _WSGIServer) -> None:
        server.stop()  # this worker accepts no new connection; the master's socket stays open for the others
        server.conn_params.no_keep_alive = True
        deadline = time.monotonic() + self.cfg.graceful_timeout
        # Wait for every request being read or answered, and for every new connection's first request (a
        # client that just connected expects an answer; the header deadline bounds the wait). Then close what
        # is left: kept-alive connections idle between requests.
        while time.monotonic() < deadline and (server.busy or server.connections - server.served):
            self.notify()
            await asyncio.sleep(0.05)
        await server.close_all_connections()
