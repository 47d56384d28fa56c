"""The explorer's HTTP server: its static page and a small JSON API, every input checked.

    GET /                    the page (and /app.js, /style.css: the files of static/, nothing else)
    GET /api/info            the planes: each model's latent size, test codes, labels, code box, view
    GET /api/decode?model=M&z=X,Y[&digit=D]
                             a PNG: what model M (ae, vae, cvae) decodes at z. For cvae, digit 0..9
                             gives that digit, digit=all (the default) the ten digits in one row.
    GET /api/sample[?seed=S] JSON: 16 draws from N(0, I) decoded by the AE and the VAE, 16 from the
                             mixture fitted to the AE's codes, each grid as a PNG data URL

Bad input is answered with a 4xx status and a one-line JSON body {"error": "..."}, and the server
goes on serving: a coordinate that is missing, not a number, NaN, infinite or beyond +-MAX_ABS_Z,
a wrong number of coordinates, an unknown model, digit, parameter or path, a parameter given
twice, another method than GET. The validation is done by pure functions (parse_z,
parse_decode, parse_seed, static_file) that raise BadRequest, so that tests can call them
directly. Static files are read into memory at start-up and served by exact name only, so no
request path (`..`, `%2e%2e`, an absolute path) can reach another file.
"""

from __future__ import annotations

import errno
import json
import math
import random
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from experiments.explore.models import NUM_CLASSES, Explorer, ProjectError

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# |z_i| above this is refused: 25 times the widest code box of the shipped models (the AE's codes
# reach about 52), and small enough that the shipped decoders stay finite there
MAX_ABS_Z = 1e3
MAX_SEED = 2**31 - 1
MAX_FIELDS = 8  # query parameters accepted in one request (parse_qsl stops counting beyond this)
# the page may run its own code, images and requests, from this server only
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadRequest(ProjectError):
    """A request the server refuses: its status (a 4xx) and a one-line reason."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


@dataclass(frozen=True)
class DecodeRequest:
    model: str
    z: list[float]
    digit: int | None  # the conditional VAE's digit; None: all of them (or a model that is not conditional)


def read_static(folder: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """URL path -> file, for every file directly in `folder`; "/" is index.html."""
    files = {f"/{path.name}": StaticFile(path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
             for path in sorted(folder.iterdir()) if path.is_file()}
    files["/"] = files["/index.html"]
    return files


def static_file(path: str, files: Mapping[str, StaticFile]) -> StaticFile:
    """The static file at URL path `path`, looked up by exact name (never through the file
    system), or BadRequest 404."""
    found = files.get(path)
    if found is None:
        raise BadRequest(f"no such page: {path[:80]}", HTTPStatus.NOT_FOUND)
    return found


def parse_query(query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string's parameters, each at most once and each one of `allowed`."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS,
                          errors="strict")
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"malformed query string: {str(err)[:80]}") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            raise BadRequest(f"unknown parameter {key[:40]!r}; this request takes {', '.join(allowed)}")
        if key in params:
            raise BadRequest(f"parameter {key!r} given twice")
        params[key] = value
    return params


def parse_z(text: str | None, latent_dim: int) -> list[float]:
    """"x,y,..." -> latent_dim finite floats, each within +-MAX_ABS_Z."""
    if text is None or not text.strip():
        raise BadRequest(f"missing z: give {latent_dim} comma-separated numbers, e.g. z={','.join(['0'] * latent_dim)}")
    parts = text.split(",")
    if len(parts) != latent_dim:
        raise BadRequest(f"z has {len(parts)} coordinate{'' if len(parts) == 1 else 's'}; this model's latent size "
                         f"is {latent_dim}")
    z = []
    for i, part in enumerate(parts):
        try:
            value = float(part)
        except ValueError:
            raise BadRequest(f"z[{i}] is not a number: {part[:20]!r}") from None
        if not math.isfinite(value):
            raise BadRequest(f"z[{i}] is {part.strip()[:20]}: coordinates must be finite numbers")
        if abs(value) > MAX_ABS_Z:
            raise BadRequest(f"z[{i}] = {value:g} is out of range: |z| may be at most {MAX_ABS_Z:g}")
        z.append(value)
    return z


def parse_decode(query: str, latent_dims: Mapping[str, int], conditional: Mapping[str, bool]) -> DecodeRequest:
    """The parameters of /api/decode, checked against the models the server has."""
    params = parse_query(query, ("model", "z", "digit"))
    name = params.get("model")
    if name not in latent_dims:
        shown = "missing" if name is None else f"{name[:20]!r}"
        raise BadRequest(f"model {shown} is not one of {', '.join(latent_dims)}")
    z = parse_z(params.get("z"), latent_dims[name])
    digit_text = params.get("digit")
    if not conditional[name]:
        if digit_text is not None:
            raise BadRequest(f"model {name!r} is not conditional: it takes no digit")
        return DecodeRequest(name, z, None)
    if digit_text is None or digit_text == "all":
        return DecodeRequest(name, z, None)
    if digit_text not in {str(d) for d in range(NUM_CLASSES)}:
        raise BadRequest(f"digit {digit_text[:20]!r} is not one of 0..{NUM_CLASSES - 1} or 'all'")
    return DecodeRequest(name, z, int(digit_text))


def parse_seed(query: str) -> int | None:
    """The optional seed of /api/sample: an integer from 0 to MAX_SEED."""
    text = parse_query(query, ("seed",)).get("seed")
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > MAX_SEED:
        raise BadRequest(f"seed {text[:20]!r} is not an integer from 0 to {MAX_SEED}")
    return int(text)


class Handler(BaseHTTPRequestHandler):
    """One request: a static file, or the API's answer from the server's Explorer."""

    server: ExplorerServer
    protocol_version = "HTTP/1.1"  # keep-alive: the page's decodes reuse one connection per plane
    # TCP_NODELAY: http.server sends the headers and the body in two writes, and with Nagle's
    # algorithm the body waited for the client's delayed ACK: 44 ms a decode instead of 1.4 ms
    # (median of 200 keep-alive requests, measured on the project's 2-core machine)
    disable_nagle_algorithm = True
    server_version = "ae-vs-vae-explorer"
    sys_version = ""

    def do_GET(self) -> None:  # the name http.server dispatches GET requests to
        try:
            status, content_type, body = self._answer()
        except BadRequest as err:
            self._send_json_error(err.status, str(err))
            return
        except ProjectError as err:  # the model's decoding failed (overflowing weights): not the request's fault
            self._send_json_error(HTTPStatus.INTERNAL_SERVER_ERROR, str(err))
            return
        self._send(status, content_type, body)

    def _answer(self) -> tuple[HTTPStatus, str, bytes]:
        if self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True  # its body is not read, so the connection cannot carry another request
            raise BadRequest("a GET request takes no body")
        url = urlsplit(self.path)
        explorer = self.server.explorer
        if url.path == "/api/info":
            return HTTPStatus.OK, "application/json", self.server.info_json
        if url.path == "/api/decode":
            models = explorer.models
            request = parse_decode(url.query, {n: m.latent_dim for n, m in models.items()},
                                   {n: m.conditional for n, m in models.items()})
            return HTTPStatus.OK, "image/png", explorer.decode_png(request.model, request.z, request.digit)
        if url.path == "/api/sample":
            seed = parse_seed(url.query)
            result = explorer.sample(random.randrange(MAX_SEED + 1) if seed is None else seed)
            return HTTPStatus.OK, "application/json", json.dumps(result).encode()
        found = static_file(url.path, self.server.static)
        return HTTPStatus.OK, found.content_type, found.body

    def _refuse_method(self) -> None:
        self.close_connection = True  # a body we do not read may follow
        self._send_json_error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} is not allowed: use GET",
                              {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse_method

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, a header too long, ...) as one-line JSON too."""
        self.close_connection = True
        self._send_json_error(HTTPStatus(code), message or HTTPStatus(code).phrase)

    def _send_json_error(self, status: HTTPStatus, message: str, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps({"error": " ".join(message.split())}).encode() + b"\n"
        self._send(status, "application/json", body, headers)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if self.close_connection:
            self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature (`format` and all)
        if self.server.log_requests:
            super().log_message(format, *args)


class ExplorerServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its Explorer (set once loaded) and its static files."""

    daemon_threads = True  # open keep-alive connections do not hold the process at exit
    explorer: Explorer
    info_json: bytes

    def __init__(self, address: tuple[str, int], static: Mapping[str, StaticFile], log_requests: bool = False):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET  # before the socket is made
        self.static = static
        self.log_requests = log_requests
        super().__init__(address, Handler)

    def attach(self, explorer: Explorer) -> None:
        """Answer from `explorer` (its /api/info is the same for every request: built once)."""
        self.explorer = explorer
        self.info_json = json.dumps(explorer.info()).encode()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the browser closed the connection mid-answer (a tab closed): nothing to report
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """The address to open: this machine's own for a server listening on every interface."""
        host, port = self.server_address[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def bind(host: str, port: int, log_requests: bool = False) -> ExplorerServer:
    """A server listening on host:port (port 0: any free one), or a one-line ProjectError when the
    port is taken or the address cannot be used. It answers once `attach`ed and serving."""
    static = read_static()
    try:
        return ExplorerServer((host, port), static, log_requests)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ProjectError(f"port {port} on {host} is already in use (another explorer?); choose another with "
                               f"--port, or --port 0 for any free one") from None
        if err.errno == errno.EACCES:
            raise ProjectError(f"no permission to listen on port {port} (ports below 1024 need root); choose "
                               f"another with --port") from None
        reason = err.strerror or str(err)
        raise ProjectError(f"cannot listen on {host}:{port}: {reason}") from None
