"""Schema fuzzing: schemathesis drives every operation of our OpenAPI document against the
real app on loopback (in front of a loopback OpenAI-compatible backend, with a repository
indexed), and checks each answer: no 5xx, a documented status, content type and body.

Deterministic and bounded: derandomized Hypothesis, no example database, a few examples
per operation and generation mode.

Excluded, and why:
- `positive_data_acceptance` for POST /api/codebase/index: a schema-valid `path` is any
  string, but only an existing folder (inside the allowed roots) is accepted, which a
  schema cannot say; the refusals themselves are tested in test_path_traversal.py.
- `positive_data_acceptance` for the chat operations and POST /api/ai/ui-to-code: an
  image must be a real image within the pixel limit (its header is read), and tool-call
  arguments the JSON text of an object; a schema says neither. Those refusals are tested
  in tests/agents (test_fields.py, test_vision.py); every other check still runs.
- `negative_data_rejection` for answers 413/431 (body or head over the size limits):
  refusals that schemathesis does not count as such; they must still be documented and
  in our error shape.
Nothing else: the backend is up, so any 5xx fails the test; 502/503/504 (backends down)
are declared on the routes that call backends. The compatible protocols' bodies are
documented as they are accepted (their routes parse them with the protocol's own rules).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # whatever its dependencies warn about at import
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.specs.openapi.checks import (
        negative_data_rejection,
        positive_data_acceptance,
    )

from tests.index.test_service import make_repo
from tests.servers.harness import ServerHandle
from tests.support.app_server import AppServer, serve_app, settings_for

EXAMPLES = 25  # per operation and generation mode
Operation = Any  # schemathesis.APIOperation, generic over four parameters
SIZE_LIMITS = {413: "payload_too_large", 431: "request_header_fields_too_large"}
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture
def app(openai_server: ServerHandle, tmp_path: Path) -> Iterator[AppServer]:
    root = make_repo(tmp_path / "repo").resolve()
    server = serve_app(
        settings_for(("upstream", "openai", openai_server.url),
                     index={"allowed_roots": [str(tmp_path)]}),
        repos=[str(root)],
    )
    yield server
    server.stop()


# Bodies with rules a schema cannot say (see the module's docstring).
SEMANTIC_BODIES = {"/api/codebase/index", "/api/ai/chat", "/api/ai/ui-to-code",
                   "/v1/chat/completions", "/api/chat"}


def excluded_checks(operation: Operation) -> list[schemathesis.CheckFunction]:
    if operation.method.upper() == "POST" and operation.path in SEMANTIC_BODIES:
        return [positive_data_acceptance]
    return []


def shorten(failure: str) -> str:
    """Reproductions of huge examples run to megabytes: keep the head of each."""
    return failure if len(failure) < 4000 else failure[:4000] + " [...]"


def fuzz(operation: Operation, mode: schemathesis.GenerationMode,
         base_url: str, session: requests.Session) -> list[str]:
    """[] when every example passed every check, else the failure Hypothesis minimised."""
    excluded = excluded_checks(operation)

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session)
        if response.status_code in SIZE_LIMITS:
            # A body or head over the size limits (the schema allows e.g. 256 texts of 100k
            # characters): refused before validation, which schemathesis does not count
            # as a refusal of negative data. The answer is still ours and documented.
            assert response.json()["error"]["type"] == SIZE_LIMITS[response.status_code]
            case.validate_response(response, excluded_checks=[*excluded, negative_data_rejection])
            return
        case.validate_response(response, excluded_checks=excluded)

    try:
        run()
    except Unsatisfiable:
        # Nothing to negate: the operation takes no parameters and no body.
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    except (Exception, BaseExceptionGroup) as exc:  # the minimal failing example, as curl
        return [f"{operation.label} [{mode.value}]: {exc}"]
    return []


def test_every_operation_answers_as_documented(app: AppServer) -> None:
    schema = schemathesis.openapi.from_url(f"{app.url}/openapi.json")
    operations: list[Operation] = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    labels = {op.label for op in operations}
    # The fuzz covers our API and every protocol we speak (a route missing from the
    # document would silently escape it).
    assert {"POST /api/ai/fim", "POST /api/codebase/search", "GET /api/codebase/status",
            "POST /api/codebase/index", "POST /v1/chat/completions", "POST /api/generate",
            "POST /v1/completions", "GET /v1/health"} <= labels
    failures: list[str] = []
    with requests.Session() as session:
        session.trust_env = False
        for operation in operations:
            for mode in MODES:
                failures += fuzz(operation, mode, app.url, session)
    assert not failures, "\n\n".join(map(shorten, failures[:10]))
