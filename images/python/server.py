"""openlambda runtime server for Python.

Follows images/PROTOCOL.md (protocol version PROTOCOL below): listens for
HTTP on a Unix socket in the sandbox directory (/host/sock/ol.sock) and serves the
manager over HTTP/1.1 connections it keeps open and reuses, a thread per
connection serving its requests one after another (the manager decides how
many calls a container serves at once, the function's concurrency, and opens
as many connections):

  POST /load    {"protocol", "dir", "module", "function", "env", "packages",
                 "function_name", "version", "memory_mb"}: once per container. Puts the code and
                its packages on the import path, sets the environment, imports
                the handler and works out its style. A generic (prewarmed)
                container becomes a function's container here.
  POST /invoke  one call. Two modes:
                - event (OpenLambda's /run): the body is the event as JSON
                  (empty = null); the answer is the JSON of the result.
                - http (the function URL; header X-Ol-Meta-Length: N): the
                  body is N bytes of JSON describing the request (method,
                  path, query, headers, sourceIp, requestId, timeoutMs)
                  followed by the request body; the answer is the function's
                  HTTP response itself (status, headers, body).
  POST /preimport {"protocol", "paths", "import", "env"}: the import cache,
                at most once, before /load. Puts package directories on the
                import path, sets the environment, and imports the top-level
                modules of the packages in "import" (named by their
                dist-info), so that a function needing them finds them
                imported already. Answers the modules imported.
  GET  /health  liveness.

Handler styles, chosen by what the handler is:
  - OpenLambda: def f(event): the event is the JSON body, the result its JSON;
  - AWS Lambda: def lambda_handler(event, context): the function URL payload
    format 2.0 in, the function URL response format out;
  - WSGI or ASGI app: a module attribute named `app` (taken when the module
    has no `f`, as OpenLambda does), or the one OL_WSGI_ENTRY names; ASGI
    when its __call__ is async.

A call through OpenLambda's /run comes in HTTP mode with "run": true in the
request description: a web app gets the request as it is (SCRIPT_NAME
/run/NAME), f(event) the JSON body as its event ({} when empty).

A handler exception answers 500 with {"error": {"type", "message"}} and the
header X-Ol-Status: error. What a call prints (stdout, stderr, its traceback)
is kept per call, up to LOG_LIMIT bytes, and sent after the answer's body: the
header X-Ol-Result-Length says where the body ends. Only the standard library
is used, so the image stays small and starts fast.
"""

import base64
import gc
import importlib
import inspect
import io
import json
import keyword
import os
import socket
import socketserver
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

SOCKET_PATH = os.environ.get("OL_SOCKET", "/host/sock/ol.sock")
LOG_LIMIT = 64 * 1024
# The protocol version (images/PROTOCOL.md): a load spec of another version is
# refused, and every reply carries X-Ol-Protocol.
PROTOCOL = 1
CUT_MARKER = "\n[output cut at 64 KiB]\n"
# Headers that frame a message: set here for the whole reply, never taken
# from an app (images/PROTOCOL.md).
FRAMING_HEADERS = ("content-length", "transfer-encoding", "connection", "keep-alive", "te",
                   "trailer", "upgrade")
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded", "+json", "+xml")

handler_fn = None
style = None
loaded = {}
preimported = None
_call = threading.local()
# Bounds on what /preimport reads of a package's metadata (untrusted files).
META_LIMIT = 256 * 1024
MODULES_LIMIT = 64
# Top-level names that are never a package's own module.
NOT_MODULES = ("bin", "tests", "test", "docs", "examples", "benchmarks")


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


def detect_style(name, fn):
    """OpenLambda f(event), AWS (event, context), or a WSGI/ASGI app."""
    if name == "app" or name == os.environ.get("OL_WSGI_ENTRY"):
        call = fn if inspect.isfunction(fn) else getattr(fn, "__call__", fn)
        return "asgi" if inspect.iscoroutinefunction(call) else "wsgi"
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return "openlambda"
    return "aws" if len(params) >= 2 else "openlambda"


def entry_name(module, function):
    """The attribute to call: `function`, except that OpenLambda's default
    `f` falls back to a web app named `app` when the module has no `f`."""
    if function == "f" and not callable(getattr(module, "f", None)) \
            and callable(getattr(module, "app", None)):
        return "app"
    return function


def is_text(content_type):
    content_type = (content_type or "").lower()
    return any(t in content_type for t in TEXT_TYPES)


def read_bounded(path):
    """A metadata file's text, at most META_LIMIT bytes; None when absent."""
    try:
        with open(path, "rb") as f:
            return f.read(META_LIMIT).decode("utf-8", "replace")
    except OSError:
        return None


def is_module(path, name):
    """Whether `name` in the package directory `path` is an importable
    top-level module: a regular package, a .py file or an extension."""
    stem = name.split(".", 1)[0]
    if not stem.isidentifier() or keyword.iskeyword(stem) or stem.startswith("_") \
            or stem in NOT_MODULES:
        return None
    full = os.path.join(path, name)
    if name == stem and os.path.isfile(os.path.join(full, "__init__.py")):
        return stem
    if name == stem + ".py" or (name.endswith(".so") and os.path.isfile(full)):
        return stem
    return None


def top_level_modules(path):
    """The top-level modules a package installed in `path` (one cache
    directory) provides, from its dist-info: top_level.txt, else the paths
    in RECORD. Reads are bounded; nothing of the package runs here."""
    try:
        infos = sorted(e for e in os.listdir(path) if e.endswith(".dist-info"))[:4]
    except OSError:
        return []
    found = []
    for info in infos:
        listed = read_bounded(os.path.join(path, info, "top_level.txt"))
        if listed is not None:
            names = [n.strip() + "/" for n in listed.split()]
        else:
            record = read_bounded(os.path.join(path, info, "RECORD")) or ""
            names = [line.split(",", 1)[0] for line in record.splitlines()]
        for entry in names:
            first, _, rest = entry.partition("/")
            name = first if rest or entry.endswith("/") else entry
            module = is_module(path, name.rstrip("/")) or is_module(path, name.rstrip("/") + ".py")
            if module and module not in found:
                found.append(module)
            if len(found) >= MODULES_LIMIT:
                return found
    return found


def preimport(spec):
    """The import cache: put `paths` on the import path, set `env`, import
    the top-level modules of the packages in `import`. A module that fails
    to import is reported and left out; the container stays usable."""
    global preimported
    paths = [str(p) for p in spec.get("paths") or []]
    for path in reversed(paths):
        sys.path.insert(0, path)
    os.environ.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
    imported, failed = [], []
    for path in spec.get("import") or []:
        for module in top_level_modules(str(path)):
            try:
                importlib.import_module(module)
                imported.append(module)
            except BaseException as exc:  # noqa: BLE001 - a package may raise anything
                failed.append({"module": module, "error": "%s: %s" % (type(exc).__name__, exc)})
    # The standard library imports the IDNA codec lazily, the first time a
    # host name is encoded: on a web app's first request (werkzeug reads the
    # Host header that way), or a handler's first connect by name. 3.7 ms
    # of a Flask app's first request, 1 MB: taken here, where a set's
    # imports already are, not in every container (a plain one stays lean).
    importlib.import_module("encodings.idna")
    settle_heap()
    preimported = imported
    return imported, failed


def settle_heap():
    """Collect once, then move every object alive now (the server's and the
    cached packages' modules) out of the garbage collector's sight: they
    live as long as the process, and a collection that walks them on a
    call (a full one over a cached Flask's 30,000 objects takes about 6 ms)
    is wasted work."""
    gc.collect()
    gc.freeze()


class LambdaContext:
    """The `context` an AWS-style handler gets."""

    def __init__(self, meta):
        self.function_name = loaded.get("function_name", "")
        self.function_version = loaded.get("version", "$LATEST")
        self.memory_limit_in_mb = int(loaded.get("memory_mb") or 0)
        self.aws_request_id = meta.get("requestId", "")
        self.invoked_function_arn = "arn:openlambda:function:" + self.function_name
        self.log_group_name = "/openlambda/" + self.function_name
        self.log_stream_name = self.aws_request_id
        self._deadline = time.monotonic() + meta.get("timeoutMs", 30000) / 1000.0

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def aws_event(meta, body):
    """The function URL payload format 2.0."""
    headers, cookies = {}, []
    for name, value in meta.get("headers", []):
        name = name.lower()
        if name == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[name] = headers[name] + "," + value if name in headers else value
    query = meta.get("query", "")
    params = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        params[k] = params[k] + "," + v if k in params else v
    binary = bool(body) and not is_text(headers.get("content-type"))
    if binary:
        text = base64.b64encode(body).decode()
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            binary, text = True, base64.b64encode(body).decode()
    now = time.time()
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": meta.get("path", "/"),
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": loaded.get("function_name", ""),
            "domainName": headers.get("host", ""),
            "domainPrefix": loaded.get("function_name", ""),
            "http": {
                "method": meta.get("method", "GET"),
                "path": meta.get("path", "/"),
                "protocol": "HTTP/1.1",
                "sourceIp": meta.get("sourceIp", ""),
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": meta.get("requestId", ""),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": binary,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if body:
        event["body"] = text
    return event


def aws_response(result):
    """Maps an AWS-style result to (status, [(name, value)], body bytes)."""
    if not (isinstance(result, dict) and "statusCode" in result):
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    status = int(result.get("statusCode") or 200)
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for k, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(k), str(v)) for v in values)
    headers.extend(("Set-Cookie", str(c)) for c in (result.get("cookies") or []))
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    body = result.get("body")
    if body is None:
        data = b""
    elif result.get("isBase64Encoded"):
        data = base64.b64decode(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode()
    return status, headers, data


def wsgi_call(app, meta, body):
    environ = {
        "REQUEST_METHOD": meta.get("method", "GET"),
        "SCRIPT_NAME": meta.get("scriptName", ""),
        # PEP 3333: the path percent-decoded, its bytes as latin-1.
        "PATH_INFO": unquote_to_bytes(meta.get("path", "/")).decode("latin-1"),
        "QUERY_STRING": meta.get("query", ""),
        "SERVER_NAME": "openlambda",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": meta.get("sourceIp", ""),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in meta.get("headers", []):
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            key = "HTTP_" + key
            environ[key] = environ[key] + "," + value if key in environ else value
    started = {}

    def start_response(status, headers, exc_info=None):
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started["status"], started["headers"] = status, headers
        return lambda data: chunks.append(data)

    chunks = []
    result = app(environ, start_response)
    try:
        for chunk in result:
            chunks.append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()
    return int(started["status"].split()[0]), list(started["headers"]), b"".join(chunks)


def asgi_call(app, meta, body):
    # Imported by /load for an ASGI app (see there); a no-op here.
    import asyncio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": meta.get("method", "GET"),
        "scheme": "http",
        "path": unquote(meta.get("path", "/")),
        "raw_path": meta.get("path", "/").encode(),
        "query_string": meta.get("query", "").encode(),
        "root_path": meta.get("scriptName", ""),
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in meta.get("headers", [])],
        "client": (meta.get("sourceIp", ""), 0),
        "server": ("openlambda", 80),
    }
    response = {"status": 500, "headers": [], "body": []}
    sent = {"body": False}

    async def receive():
        if not sent["body"]:
            sent["body"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
            response["headers"] = [(k.decode("latin-1"), v.decode("latin-1"))
                                   for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            response["body"].append(message.get("body", b""))

    asyncio.run(app(scope, receive, send))
    return response["status"], response["headers"], b"".join(response["body"])


def openlambda_http(meta, body):
    """f(event) behind a function URL: the event is the JSON body (empty is
    null there, {} on /run as OpenLambda gives)."""
    try:
        event = json.loads(body) if body.strip() else ({} if meta.get("run") else None)
    except ValueError as exc:
        message = "the body must be JSON (it is the handler's event): %s" % exc
        return 400, [("Content-Type", "application/json")], json.dumps(
            {"error": {"code": "invalid_event", "message": message}}).encode()
    return 200, [("Content-Type", "application/json")], json.dumps(handler_fn(event)).encode()


class Handler(BaseHTTPRequestHandler):
    # Keep-alive: the manager reuses a connection for call after call. Every
    # reply has a Content-Length (_send; the base class's own errors close
    # the connection) and every request's body is read whole before the
    # reply, so the next request starts where this one ended.
    protocol_version = "HTTP/1.1"
    server_version = "openlambda-python/1"

    def handle_one_request(self):
        # This thread serves its connection's calls one after another: no
        # capture is left over from the one before.
        _call.output = None
        super().handle_one_request()

    def address_string(self):
        return "manager"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, payload, raw=None, output=b"", headers=(), error=False):
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        has_type = False
        for name, value in headers:
            lower = name.lower()
            # This reply's framing is ours alone (one Content-Length for the
            # body and the captured output): an app's own framing headers
            # describe only its body and would contradict it.
            if lower in FRAMING_HEADERS or lower.startswith("x-ol-"):
                continue
            has_type = has_type or lower == "content-type"
            self.send_header(name, value)
        if not has_type:
            self.send_header("Content-Type", "application/json")
        if error:
            self.send_header("X-Ol-Status", "error")
        self.send_header("Content-Length", str(len(body) + len(output)))
        self.send_header("X-Ol-Result-Length", str(len(body)))
        self.send_header("X-Ol-Protocol", str(PROTOCOL))
        self.end_headers()
        self.wfile.write(body + output)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self):
        self._body()
        if self.path == "/health":
            self._send(200, {"ok": True, "loaded": loaded.get("handler"), "protocol": PROTOCOL})
        else:
            self._send(404, _error("NotFound", self.path))

    def do_POST(self):
        raw = self._body()
        if self.path == "/load":
            self._load(raw)
        elif self.path == "/preimport":
            self._preimport(raw)
        elif self.path == "/invoke":
            self._invoke(raw)
        else:
            self._send(404, _error("NotFound", self.path))

    def _preimport(self, raw):
        spec = json.loads(raw or b"{}")
        started = time.monotonic()
        if spec.get("protocol") != PROTOCOL:
            self._send(400, _error("ProtocolMismatch", "the manager speaks protocol %r, this runtime %d"
                                   % (spec.get("protocol"), PROTOCOL)))
            return
        if handler_fn is not None or preimported is not None:
            self._send(409, _error("AlreadyLoaded", "/preimport comes once, before /load"))
            return
        imported, failed = preimport(spec)
        self._send(200, {"modules": imported, "failed": failed,
                         "ms": (time.monotonic() - started) * 1000})

    def _load(self, raw):
        global handler_fn, style, loaded
        spec = json.loads(raw or b"{}")
        started = time.monotonic()
        if spec.get("protocol") != PROTOCOL:
            self._send(400, _error("ProtocolMismatch", "the manager speaks protocol %r, this runtime %d; "
                                   "rebuild the runtime images (ol images)" % (spec.get("protocol"), PROTOCOL)))
            return
        try:
            os.environ.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
            code_dir = spec["dir"]
            for path in reversed(spec.get("packages") or []):
                sys.path.insert(0, path)
            sys.path.insert(0, code_dir)
            os.chdir(code_dir)
            module = importlib.import_module(spec["module"])
            name = entry_name(module, spec["function"])
            fn = getattr(module, name, None)
            if not callable(fn):
                raise AttributeError(
                    "module %s has no function %s" % (spec["module"], spec["function"])
                    + (" and no app" if spec["function"] == "f" else "")
                )
        except BaseException as exc:  # noqa: BLE001 - report every load failure
            traceback.print_exc()
            self._send(500, _error(type(exc).__name__, str(exc)))
            return
        handler_fn = fn
        style = detect_style(name, fn)
        if style == "asgi":
            # Only ASGI apps need asyncio: 2.8 MB that every other
            # container leaves to its handler, imported here so that the
            # first call does not pay for it.
            importlib.import_module("asyncio")
        loaded = {
            "handler": "%s.%s" % (spec["module"], name),
            "function_name": spec.get("function_name", ""),
            "version": spec.get("version", ""),
            "memory_mb": spec.get("memory_mb", 0),
        }
        self._send(200, {"loaded": loaded["handler"], "style": style,
                         "ms": (time.monotonic() - started) * 1000})

    def _invoke(self, raw):
        if handler_fn is None:
            self._send(409, _error("NotLoaded", "no handler loaded"))
            return
        meta_length = self.headers.get("X-Ol-Meta-Length")
        start_capture()
        try:
            if meta_length is None:
                status, headers, body = self._event_call(raw)
            else:
                n = int(meta_length)
                status, headers, body = self._http_call(json.loads(raw[:n]), raw[n:])
        except BaseException as exc:  # noqa: BLE001 - a handler may raise anything
            traceback.print_exc()
            output = end_capture()
            sys.__stderr__.write(output.decode("utf-8", "replace"))
            self._send(500, _error(type(exc).__name__, str(exc)), output=output, error=True)
            return
        self._send(status, None, raw=body, headers=headers, output=end_capture())

    def _event_call(self, raw, meta=None, empty=None):
        try:
            event = json.loads(raw) if raw.strip() else empty
        except ValueError as exc:
            return 400, [], json.dumps(_error("InvalidEvent", "event is not JSON: %s" % exc)).encode()
        if style == "aws":
            result = handler_fn(event, LambdaContext(meta or {}))
        elif style in ("wsgi", "asgi"):
            raise TypeError("a web app is called through its function URL (/fn/NAME), not /run")
        else:
            result = handler_fn(event)
        return 200, [], json.dumps(result).encode()

    def _http_call(self, meta, body):
        if meta.get("run") and style == "aws":
            # /run: the JSON body is the event, as for f(event).
            return self._event_call(body, meta, empty={})
        if style == "aws":
            return aws_response(handler_fn(aws_event(meta, body), LambdaContext(meta)))
        if style == "wsgi":
            return wsgi_call(handler_fn, meta, body)
        if style == "asgi":
            return asgi_call(handler_fn, meta, body)
        return openlambda_http(meta, body)


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
    settle_heap()
    server.serve_forever()


if __name__ == "__main__":
    main()
