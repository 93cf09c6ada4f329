"""Who may talk to the gateway: API tokens, a Host allow-list and CORS, in one ASGI pass.

Checked in this order, each before any route runs:

1. Host (DNS rebinding): a web page on `evil.example` that re-resolves its name to
   127.0.0.1 reaches us with `Host: evil.example`; only the names we are known by pass
   (421 otherwise). The port in Host is ignored.
2. Origin (CORS and cross-site requests): a request from a browser page on another
   origin passes only if that origin is listed (403 otherwise, with no allow header);
   preflights from listed origins are answered here, without a token, as browsers send
   none with them.
3. Token: when tokens are configured every path except `/health/live` needs one, as
   `Authorization: Bearer <t>`, `X-Api-Key: <t>` or `api-key: <t>` (401 otherwise), or
   as the password of HTTP Basic authentication: a browser asks for it when the page at
   `/` answers 401 with a Basic challenge, then sends it with the page's own API calls.
   Tokens are kept as SHA-256 digests and compared with `hmac.compare_digest`.

The request then carries its Principal (who sent it: a token's short id and its team) in
the scope and in `current_principal`, which scopes cache keys and repository access.

This module depends on nothing else in mimiverse, so config.py can use its helpers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import PurePath

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNPROTECTED_PATHS = frozenset({"/health/live"})
# Pages a person opens in a browser: their 401 asks the browser for the token (Basic).
BROWSER_PATHS = frozenset({"/"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
TOKEN_HEADERS = (b"x-api-key", b"api-key")
CORS_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = b"Authorization, Content-Type, X-Api-Key, Api-Key"
CORS_MAX_AGE = b"600"


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from. `team` None: every cache entry and repository."""

    token_id: str  # names the token in logs and limits; reveals nothing about it
    team: str | None = None
    repos: tuple[str, ...] = ()  # a team's repository folders (absolute)

    @classmethod
    def for_digest(cls, digest: bytes, team: str | None = None,
                   repos: Iterable[str] = ()) -> Principal:
        return cls(hashlib.sha256(digest).hexdigest()[:12], team, tuple(repos))

    def may_use(self, root: str | PurePath) -> bool:
        """May this principal index or search the repository at `root` (absolute)?"""
        return self.team is None or inside_any(root, self.repos)


ANONYMOUS = Principal("anonymous")
PRINCIPAL_SCOPE_KEY = "mimiverse.principal"
# Set for the request's task by the gate; read where scoping happens (cache keys, index).
current_principal: ContextVar[Principal] = ContextVar("mimiverse_principal", default=ANONYMOUS)


def inside_any(path: str | PurePath, roots: Iterable[str | PurePath]) -> bool:
    """Is `path` one of `roots` or inside one? Both sides are compared as given: resolve
    `..` and symlinks first (nothing here touches the file system)."""
    path = PurePath(path)
    return any(path.is_relative_to(root) for root in roots)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (with or without IPv6 brackets)."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_unspecified(host: str) -> bool:
    """0.0.0.0 or :: (bind to every interface): a bind address, never a name to be called."""
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
    except ValueError:
        return False


def host_name(value: str) -> str:
    """A Host header or an allowed_hosts entry, lowercased, without port: `[::1]:5000`
    -> `[::1]`, `::1` -> `[::1]`, `Example.com:80` -> `example.com`."""
    value = value.strip().lower().rstrip(".")
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    if value.count(":") > 1:  # a bare IPv6 address, written without brackets
        return f"[{value}]"
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() else value


def allowed_host_names(configured_host: str, extra: Iterable[str]) -> frozenset[str] | None:
    """The Host names to accept; None when `*` says any."""
    names = [*LOOPBACK_NAMES, *extra]
    if "*" in names:
        return None
    if not is_unspecified(configured_host):
        names.append(configured_host)
    return frozenset(host_name(n) for n in names)


class SecurityGate:
    """Pure ASGI middleware; with defaults (no tokens, no CORS) it only checks Host."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        principals: Mapping[bytes, Principal] | None = None,
        allowed_hosts: frozenset[str] | None = frozenset(LOOPBACK_NAMES),
        cors_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.principals = tuple((principals or {}).items())
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.encode() for h in allowed_hosts)
        )
        self.origins = frozenset(o.rstrip("/").lower().encode() for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        preflight = hosts = False
        for key, value in scope["headers"]:
            if key == b"host":
                hosts, host = host is not None, value
            elif key == b"origin":
                origin = value
            elif key == b"access-control-request-method":
                preflight = True
        if hosts:  # which one counts would depend on who reads them (RFC 9112: a 400)
            await refuse(send, 400, "invalid_request", "the request has more than one Host header")
            return
        if self.allowed_hosts is not None and not self._host_allowed(host):
            shown = (host or b"").decode("latin-1")[:200]
            await refuse(send, 421, "misdirected_request",
                          f"Host {shown!r} is not served here; add it to [server] allowed_hosts")
            return
        if origin is not None and not _same_origin(origin, host):
            if origin.rstrip(b"/").lower() not in self.origins:
                shown = origin.decode("latin-1")[:200]
                await refuse(send, 403, "forbidden_origin",
                              f"origin {shown!r} is not allowed; list it in [server] cors_origins")
                return
            if preflight and scope["method"] == "OPTIONS":
                await _preflight(send, origin)
                return
            send = _with_cors(send, origin)
        principal = ANONYMOUS
        if self.principals and scope["path"] not in UNPROTECTED_PATHS:
            found = self._principal(scope["headers"])
            if isinstance(found, str):
                challenge = b'Basic realm="Mimiverse", charset="UTF-8"' \
                    if scope["path"] in BROWSER_PATHS else b"Bearer"
                await refuse(send, 401, "unauthorized", found,
                              [(b"www-authenticate", challenge)])
                return
            principal = found
        scope[PRINCIPAL_SCOPE_KEY] = principal
        reset = current_principal.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            current_principal.reset(reset)

    def _host_allowed(self, host: bytes | None) -> bool:
        assert self.allowed_hosts is not None
        if host is None:
            return False
        if host in self.allowed_hosts:  # the common case: no port, already lowercase
            return True
        return host_name(host.decode("latin-1")).encode() in self.allowed_hosts

    def _principal(self, headers: Iterable[tuple[bytes, bytes]]) -> Principal | str:
        """Whose configured token was sent; else what is wrong (never the token)."""
        token: bytes | None = None
        for key, value in headers:
            if key == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    token = rest.strip()
                elif scheme.lower() == b"basic":
                    token = _basic_password(rest.strip())
            elif key in TOKEN_HEADERS:
                token = value.strip()
        if not token:
            return ("a token is required: send 'Authorization: Bearer <token>' "
                    "(or 'X-Api-Key: <token>')")
        digest = hashlib.sha256(token).digest()
        # Compare with every digest, each in constant time: no early exit to time.
        matched: Principal | None = None
        for known, principal in self.principals:
            if hmac.compare_digest(digest, known):
                matched = principal
        return matched or "the token is not valid"


def _basic_password(credentials: bytes) -> bytes | None:
    """The password of `Basic base64(user:password)`; the user name is not checked."""
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except ValueError:
        return None
    _, sep, password = decoded.partition(b":")
    return password if sep else None


def _same_origin(origin: bytes, host: bytes | None) -> bool:
    """A page served by us (e.g. /docs) calling us: no CORS involved."""
    if host is None:
        return False
    _, sep, rest = origin.partition(b"://")
    return bool(sep) and rest.lower() == host.lower()


def _with_cors(send: Send, origin: bytes) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_cors


async def _preflight(send: Send, origin: bytes) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", CORS_METHODS),
        (b"access-control-allow-headers", CORS_HEADERS),
        (b"access-control-max-age", CORS_MAX_AGE),
        (b"vary", b"Origin"),
    ]})
    await send({"type": "http.response.body", "body": b""})


async def refuse(
    send: Send, status: int, kind: str, message: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
