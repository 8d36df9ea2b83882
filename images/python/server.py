"""openlambda runtime server for Python.

Listens for HTTP on a Unix socket in the sandbox directory (/host/ol.sock) and
serves the manager, a thread per request (the manager decides how many calls
a container serves at once: the function's concurrency):

  POST /load    {"dir", "module", "function", "env"}  once per container:
                put the code on the import path, set the environment, import
                the handler. A generic (prewarmed) container becomes a
                function's container here.
  POST /invoke  the event as the JSON body (empty = null); answers the JSON of
                the handler's return value.
  GET  /health  liveness.

A handler exception answers 500 with {"error": {"type", "message"}}.

What a call prints (stdout, stderr, its traceback) is kept per call, up to
LOG_LIMIT bytes, and sent back after the result: the header
X-Ol-Result-Length says where the result ends and the output begins. Only the
standard library is used, so the image stays small and starts fast.
"""

import importlib
import json
import os
import socket
import socketserver
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler

SOCKET_PATH = os.environ.get("OL_SOCKET", "/host/ol.sock")

LOG_LIMIT = 64 * 1024
CUT_MARKER = "\n[output cut at 64 KiB]\n"

handler_fn = None
loaded = None
_call = threading.local()


class CallOutput:
    """Stands in for sys.stdout and sys.stderr: what a call's thread writes
    goes to that call's buffer; anything else to the container's log."""

    def __init__(self, real):
        self.real = real

    def write(self, text):
        buf = getattr(_call, "output", None)
        if buf is None:
            return self.real.write(text)
        data = text.encode("utf-8", "replace")
        room = LOG_LIMIT - buf["size"]
        if len(data) > room:
            buf["cut"] = True
            data = data[: max(room, 0)]
        buf["parts"].append(data)
        buf["size"] += len(data)
        return len(text)

    def flush(self):
        self.real.flush()

    def __getattr__(self, name):
        return getattr(self.real, name)


def start_capture():
    _call.output = {"parts": [], "size": 0, "cut": False}


def end_capture():
    buf = _call.output
    _call.output = None
    out = b"".join(buf["parts"])
    if buf["cut"]:
        out = out.decode("utf-8", "ignore").encode() + CUT_MARKER.encode()
    return out


def _error(kind, message):
    return {"error": {"type": kind, "message": message}}


class Handler(BaseHTTPRequestHandler):
    # One request per connection; the manager opens a new connection per call.
    protocol_version = "HTTP/1.0"
    server_version = "openlambda-python/1"

    def address_string(self):
        return "manager"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, payload, raw=None, output=b""):
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) + len(output)))
        self.send_header("X-Ol-Result-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body + output)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"ok": True, "loaded": loaded})
        else:
            self._send(404, _error("NotFound", self.path))

    def do_POST(self):
        if self.path == "/load":
            self._load()
        elif self.path == "/invoke":
            self._invoke()
        else:
            self._send(404, _error("NotFound", self.path))

    def _load(self):
        global handler_fn, loaded
        spec = json.loads(self._body() or b"{}")
        started = time.monotonic()
        try:
            os.environ.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
            code_dir = spec["dir"]
            sys.path.insert(0, code_dir)
            os.chdir(code_dir)
            module = importlib.import_module(spec["module"])
            fn = getattr(module, spec["function"], None)
            if not callable(fn):
                raise AttributeError(
                    "module %s has no function %s" % (spec["module"], spec["function"])
                )
        except BaseException as exc:  # noqa: BLE001 - report every load failure
            traceback.print_exc()
            self._send(500, _error(type(exc).__name__, str(exc)))
            return
        handler_fn = fn
        loaded = "%s.%s" % (spec["module"], spec["function"])
        self._send(200, {"loaded": loaded, "ms": (time.monotonic() - started) * 1000})

    def _invoke(self):
        if handler_fn is None:
            self._send(409, _error("NotLoaded", "no handler loaded"))
            return
        raw = self._body()
        try:
            event = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            self._send(400, _error("InvalidEvent", "event is not JSON: %s" % exc))
            return
        start_capture()
        try:
            result = handler_fn(event)
            body = json.dumps(result).encode()
        except BaseException as exc:  # noqa: BLE001 - a handler may raise anything
            traceback.print_exc()
            output = end_capture()
            sys.__stderr__.write(output.decode("utf-8", "replace"))
            self._send(500, _error(type(exc).__name__, str(exc)), output=output)
            return
        self._send(200, None, raw=body, output=end_capture())


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        try:
            os.unlink(self.server_address)
        except FileNotFoundError:
            pass
        # The manager may run as another user: let it connect.
        old = os.umask(0)
        try:
            super().server_bind()
        finally:
            os.umask(old)

    def handle_error(self, request, client_address):
        traceback.print_exc()


def main():
    sys.stdout = CallOutput(sys.stdout)
    sys.stderr = CallOutput(sys.stderr)
    server = UnixServer(SOCKET_PATH, Handler)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    print("openlambda runtime listening on %s" % SOCKET_PATH, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
