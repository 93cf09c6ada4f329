"""The one exception tree. Foreign errors are translated into these once per boundary.

    MimiverseError
    ├── ConfigError                 invalid settings; the process refuses to start
    ├── ModelFileError              a model file cannot be fetched, or its bytes are wrong
    ├── CodeIndexError              the code index cannot do what was asked
    │   └── IndexLocked             another writer holds the repository's index
    ├── RequestError                the client asked for something we cannot do (4xx)
    │   ├── InvalidRequest          422: a field is outside what is allowed
    │   ├── PromptTooLong           400: more prompt tokens than the model's route allows
    │   ├── FieldUnsupported        400: a field no backend of the route can honour
    │   ├── ImageTooLarge           413: an image over the byte or pixel limit
    │   ├── Forbidden               403: this token may not do that (e.g. a team's)
    │   ├── ModelNotFound           404: no task alias, configured model or listed model
    │   └── NotReady                409: e.g. searching before any repository is indexed
    └── BackendError                an inference backend failed (carries the backend name)
        ├── BackendUnavailable      connection refused/reset, 5xx, process gone
        ├── BackendTimeout          connect, first token, between tokens or total
        ├── BackendProtocolError    the answer was not what the protocol promises
        ├── BackendRejected         the backend answered 4xx (e.g. model not pulled there)
        ├── Unsupported             this backend kind cannot do the task
        ├── StreamInterrupted       failed after the first token was sent: never retried
        └── AllBackendsFailed       every candidate failed before its first token: 504
                                    if each timed out, 502 if each answered malformed,
                                    else 503

The router falls back on BackendError subclasses (never on message text), except
StreamInterrupted which ends the response. HTTP handlers map classes to status codes in
one place (api/errors.py).
"""

from __future__ import annotations

from mimiverse.credentials import without_credentials


class MimiverseError(Exception):
    """Base class of every error Mimiverse raises on purpose."""


class ConfigError(MimiverseError):
    """Settings are invalid; the message names the field and what is allowed."""


class ModelFileError(MimiverseError):
    """A catalog model is not here and cannot be fetched, or a download's SHA-256 is wrong;
    the message says what to run or where to put the file."""


class CodeIndexError(MimiverseError):
    pass


class IndexLocked(CodeIndexError):
    """Another indexing run holds the writer lock for this repository."""


class RequestError(MimiverseError):
    status_code = 400


class InvalidRequest(RequestError):
    status_code = 422


class PromptTooLong(RequestError):
    status_code = 400


class FieldUnsupported(RequestError):
    """A request field (tools, images, num_ctx, ...) that no candidate backend honours; the
    message names each field and backend. Never accepted and dropped."""

    status_code = 400


class ImageTooLarge(RequestError):
    """An image over the byte or pixel limit (every protocol answers 413)."""

    status_code = 413


class Forbidden(RequestError):
    status_code = 403


class ModelNotFound(RequestError):
    status_code = 404


class NotReady(RequestError):
    status_code = 409


class BackendError(MimiverseError):
    """An inference backend failed. `backend` names it as configured. The message never
    holds a URL's credentials: clients, health checks and logs all show it."""

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(without_credentials(message))
        self.backend = backend

    @property
    def reason(self) -> str:
        return str(self)


class BackendUnavailable(BackendError):
    pass


class BackendTimeout(BackendError):
    pass


class BackendProtocolError(BackendError):
    pass


class BackendRejected(BackendError):
    def __init__(self, message: str, *, backend: str = "", status_code: int = 400) -> None:
        super().__init__(message, backend=backend)
        self.status_code = status_code


class Unsupported(BackendError):
    pass


class StreamInterrupted(BackendError):
    """The upstream failed after text was already sent; the stream ends with an error."""


class AllBackendsFailed(BackendError):
    """Every candidate backend failed; `failures` lists (backend, reason) in order tried,
    `errors` the error of each one tried (a skipped one, e.g. cooling down, has none)."""

    def __init__(self, task: str, failures: list[tuple[str, str]],
                 errors: list[BackendError] | None = None) -> None:
        detail = "; ".join(f"{name}: {why}" for name, why in failures) or "none configured"
        super().__init__(f"all backends for {task} failed: {detail}")
        self.task = task
        self.failures = failures
        self.errors = errors or []

    def all_failed_by(self, kind: type[BackendError]) -> bool:
        """Was every candidate tried, and did each fail this way (e.g. by timing out)?"""
        return bool(self.errors) and len(self.errors) == len(self.failures) and all(
            isinstance(e, kind) for e in self.errors)
