"""The chat fields agents send, as every protocol here spells them: tools, tool choice,
structured output, images, tool calls in the history. Parsed strictly (unknown keys are
refused, naming them) and turned into the internal request (backends/base.py).

OpenAI's shapes are the common ones: our /api/ai/chat takes them as they are, and Ollama's
`tools` are the same objects.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections import OrderedDict
from typing import Annotated, Any, Literal

import imagesize
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
)

from mimiverse.api.limits import MAX_TEXT, NumbersNotBooleans
from mimiverse.backends.base import Image, ResponseFormat, Tool
from mimiverse.errors import ImageTooLarge, InvalidRequest

MAX_TOOLS = 128
MAX_IMAGES = 16  # per request
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # decoded, per image (bodies stop at 8 MiB anyway)
MAX_IMAGE_PIXELS = 25_000_000  # per image: what a vision model is sent is bounded too
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+\-]+);base64,", re.ASCII)


class Strict(BaseModel):
    """Refuses keys it does not define: nothing a client sends is silently dropped."""

    model_config = ConfigDict(extra="forbid")


class SamplingExtras(NumbersNotBooleans):
    """The sampling fields beyond temperature, seed and stop, bounded alike in every
    protocol (each adds its own spelling of the repeat penalty)."""

    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, le=1000)  # Ollama's; vLLM's and llama.cpp's extensions
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    def sampling_fields(self) -> dict[str, Any]:
        """The sampling fields set, by the internal request's names: these, the repeat
        penalty in the protocol's spelling, and Ollama's num_ctx where the model has them."""
        fields = {n: getattr(self, n, None) for n in _SAMPLING}
        repetition = fields.pop("repetition_penalty")  # the OpenAI side's spelling (vLLM's)
        if repetition is not None:
            fields["repeat_penalty"] = repetition
        return {n: v for n, v in fields.items() if v is not None}


_SAMPLING = ("top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
             "repeat_penalty", "repetition_penalty", "num_ctx")


def passthrough_fields(kind: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The request fields that send `extra` (fields we do not model) verbatim to backends
    of `kind`'s protocol, refused by others; none when `extra` is empty."""
    if not extra:
        return {}
    return {"passthrough": tuple(sorted(extra.items())), "passthrough_kind": kind}


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON Schema object")
    return value


# A JSON Schema is taken as parsed: checking that it is an object is enough here (the
# backend reads the schema), and walking every nested value cost a third of a request's
# parsing for an agent's nine tools.
SchemaObject = Annotated[dict[str, Any], PlainValidator(_json_object),
                         WithJsonSchema({"type": "object"})]


class FunctionDef(Strict):
    name: FunctionName
    description: str | None = Field(None, max_length=16_384)
    parameters: SchemaObject | None = None  # a JSON Schema object
    strict: bool | None = None


class ToolDef(Strict):
    type: Literal["function"] = "function"
    function: FunctionDef

    def to_tool(self) -> Tool:
        f = self.function
        return Tool(f.name, f.description or "", f.parameters, f.strict)


class _RecentTools:
    """Tool lists validated lately, by their JSON text: an agent sends the same tools with
    every request of a session, and validating them again cost more than the rest of the
    request's parsing (bench/chat_tools.py). Validated models are never changed."""

    SIZE = 256

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, list[ToolDef]] = OrderedDict()

    def __call__(self, value: Any, handler: ValidatorFunctionWrapHandler) -> list[ToolDef]:
        try:
            key = orjson.dumps(value)
        except TypeError:  # not JSON (a Python caller): validate as usual
            return ToolDefs(handler(value))
        known = self._seen.get(key)
        if known is not None:
            self._seen.move_to_end(key)
            return known
        tools = ToolDefs(handler(value))
        self._seen[key] = tools
        if len(self._seen) > self.SIZE:
            self._seen.popitem(last=False)
        return tools


class ToolDefs(list[ToolDef]):
    """Validated tools with their internal form made once."""

    def __init__(self, tools: list[ToolDef]) -> None:
        super().__init__(tools)
        self.internal = tuple(t.to_tool() for t in tools)


ToolList = Annotated[list[ToolDef], WrapValidator(_RecentTools())]


class NamedFunction(Strict):
    name: FunctionName


class NamedChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedChoice


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str | None = Field(None, max_length=16_384)
    json_schema: SchemaObject = Field(alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


Format = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat,
                   Field(discriminator="type")]


def response_format(fmt: Format | None) -> ResponseFormat | None:
    if fmt is None or isinstance(fmt, TextFormat):
        return None
    if isinstance(fmt, JsonObjectFormat):
        return ResponseFormat("json_object")
    spec = fmt.json_schema
    return ResponseFormat("json_schema", spec.json_schema, spec.name, spec.strict)


def tool_fields(tools: list[ToolDef] | None, choice: ToolChoice | None,
                parallel: bool | None = None) -> dict[str, Any]:
    """ChatRequest fields for tools and the tool choice (a choice without tools is moot:
    OpenAI refuses it, and so do we)."""
    if not tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice names a tool but no tools were given")
        return {}
    fields: dict[str, Any] = {"tools": tools.internal if isinstance(tools, ToolDefs)
                              else tuple(t.to_tool() for t in tools)}
    if isinstance(choice, NamedChoice):
        if choice.function.name not in {t.function.name for t in tools}:
            raise InvalidRequest(f"tool_choice names {choice.function.name!r}, "
                                 "which is not among the tools")
        fields.update(tool_choice="function", tool_choice_name=choice.function.name)
    elif choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    return fields


def json_arguments(value: str) -> str:
    """Tool-call arguments from a client: the JSON text of an object."""
    try:
        parsed = orjson.loads(value or "{}")
    except orjson.JSONDecodeError:
        raise ValueError("arguments must be the JSON text of an object") from None
    if not isinstance(parsed, dict):
        raise ValueError("arguments must be the JSON text of an object")
    return value or "{}"


def image_from_url(url: str) -> Image:
    """An OpenAI image_url: a base64 data URL (checked), or an http(s) URL the backend
    fetches (a backend that cannot is never chosen)."""
    match = _DATA_URL.match(url)
    if match is not None:
        return checked_image(url[match.end():], match.group(1))
    if url.startswith(("http://", "https://")):
        return Image(url=url)
    raise InvalidRequest("an image URL must be a base64 data: URL "
                         "(data:image/...;base64,...) or an http(s) URL")


def checked_image(data: str, media_type: str = "") -> Image:
    """A base64 image within the limits: ImageTooLarge (413) over MAX_IMAGE_BYTES or
    MAX_IMAGE_PIXELS, InvalidRequest when it is not base64 of an image whose size its
    header tells (PNG, JPEG, GIF, WebP, BMP, TIFF, ...)."""
    if len(data) // 4 * 3 > MAX_IMAGE_BYTES + 3:
        raise ImageTooLarge(f"an image is over {MAX_IMAGE_BYTES} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("an image is not valid base64") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(f"an image is over {MAX_IMAGE_BYTES} bytes")
    try:
        width, height = imagesize.get(io.BytesIO(raw))
    except ValueError:
        width = height = -1
    if width <= 0 or height <= 0:
        raise InvalidRequest("an image is not a PNG, JPEG, GIF, WebP or other image whose "
                             "size its header tells")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"an image of {width}x{height} pixels is over "
                            f"{MAX_IMAGE_PIXELS:,} pixels")
    return Image(data=data, media_type=media_type)


def check_image_count(count: int) -> None:
    if count > MAX_IMAGES:
        raise InvalidRequest(f"{count} images in one request; at most {MAX_IMAGES} are taken")


class ArgumentsText(Strict):
    """OpenAI's function call in an assistant turn."""

    name: FunctionName
    arguments: str = Field("{}", max_length=MAX_TEXT)

    _json = field_validator("arguments")(json_arguments)
