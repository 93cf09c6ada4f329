"""LeanRoute: the hot routes, declared like any FastAPI route, served without the
per-request machinery FastAPI runs for arbitrary signatures.

Every keystroke of every editor is a completion request, and the gateway's throughput is
its CPU per request. FastAPI's generic handler (body parsing by content type, the
dependency solver, response-model revalidation) cost ~0.1 ms of the ~0.9 ms a completion
took (docs/benchmarks.md); these routes need none of that generality. An endpoint whose
parameters are only a pydantic body model, the `Request` and the gateway (`GatewayDep`),
and which returns a pydantic model or a `Response`, is served by a handler that validates
the body with the model's own JSON parser and passes those three directly. The
declaration stays the one source of the OpenAPI schema; errors raise as in any route and
the app's handlers answer them. Any other signature is served by FastAPI's handler.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Coroutine
from typing import Any, Union

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from mimiverse.api.deps import GatewayDep

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
JSON_MEDIA = "application/json"
UNREADABLE = "There was an error parsing the body"  # FastAPI's words; errors.py rewrites them


class LeanRoute(APIRoute):
    """Lean when the endpoint's signature allows it (`lean` says which); see the module."""

    lean: bool = False

    def get_route_handler(self) -> Handler:
        handler = _lean_handler(self.endpoint, self.status_code or 200)
        self.lean = handler is not None
        return handler if handler is not None else super().get_route_handler()


def _lean_handler(endpoint: Callable[..., Any], status: int) -> Handler | None:
    """The handler for `endpoint`, or None when its signature needs FastAPI's own."""
    hints = typing.get_type_hints(endpoint, include_extras=True)
    body: tuple[str, type[BaseModel]] | None = None
    request_name = gateway_name = None
    for name in inspect.signature(endpoint).parameters:
        hint = hints.get(name)
        if hint is Request:
            request_name = name
        elif hint == GatewayDep:
            gateway_name = name
        elif body is None and isinstance(hint, type) and issubclass(hint, BaseModel):
            body = (name, hint)
        else:
            return None
    if not _model_or_response(hints.get("return")):
        return None

    async def handler(request: Request) -> Response:
        args: dict[str, Any] = {}
        if body is not None:
            args[body[0]] = _validated(body[1], request.headers.get("content-type"),
                                       await request.body())
        if request_name is not None:
            args[request_name] = request
        if gateway_name is not None:
            args[gateway_name] = request.app.state.gateway
        result = await endpoint(**args)
        if isinstance(result, Response):
            return result
        return Response(result.model_dump_json(), status_code=status, media_type=JSON_MEDIA)

    return handler


def _model_or_response(hint: object) -> bool:
    members = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) \
        else (hint,)
    return all(isinstance(m, type) and issubclass(m, BaseModel | Response) for m in members)


def _validated(model: type[BaseModel], content_type: str | None, raw: bytes) -> BaseModel:
    """`raw` as `model`, or the error FastAPI would give: 422 naming the bad fields, or a
    JSON syntax error; 400 when the bytes cannot be read at all (not UTF-8, nested too
    deep); JSON bodies only, as FastAPI's strict content-type check."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if not (media == JSON_MEDIA or (media.startswith("application/") and
                                    media.endswith("+json"))):
        raise RequestValidationError([{
            "type": "content_type", "loc": ("body",), "input": None,
            "msg": f"the body must be JSON with Content-Type {JSON_MEDIA}, "
                   f"got {content_type or 'none'!r}",
        }])
    try:
        return model.model_validate_json(raw.decode())
    except UnicodeDecodeError:
        raise HTTPException(400, UNREADABLE) from None
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    if errors[0]["type"] != "json_invalid":
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])
    reason = str(errors[0].get("ctx", {}).get("error", "invalid"))
    if "recursion limit" in reason:  # nested too deep to read: as FastAPI, a 400
        raise HTTPException(400, UNREADABLE)
    raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "input": {},
                                   "msg": f"JSON decode error: {reason}"}])
