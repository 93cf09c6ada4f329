"""The languages chunked by syntax: what their definitions look like in each tree-sitter
grammar, and parsing with a time budget."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from tree_sitter import Parser, Point, Tree
from tree_sitter_language_pack import get_parser

if TYPE_CHECKING:
    from tree_sitter_language_pack import SupportedLanguage

C_STYLE_COMMENTS = frozenset({"comment"})


@dataclass(frozen=True, slots=True)
class Spec:
    """What the definitions of one language look like in its tree-sitter grammar."""

    grammar: str
    functions: frozenset[str]
    classes: frozenset[str]
    # Looked through: their members are chunked as if at the enclosing level.
    namespaces: frozenset[str] = frozenset()  # named: the name qualifies members' symbols
    transparent: frozenset[str] = frozenset({"ERROR"})
    wrappers: frozenset[str] = frozenset()  # decorators, export, template around one def
    attachable: frozenset[str] = C_STYLE_COMMENTS  # sticks to the definition below it
    variables: frozenset[str] = frozenset()  # `const f = () => ...` declarations
    fields: frozenset[str] = frozenset()  # class fields, which may hold a function
    function_values: frozenset[str] = frozenset()
    flatten: frozenset[str] = frozenset()  # bodies nested inside a class body


_JS_FUNCTIONS = frozenset(
    {"function_declaration", "generator_function_declaration", "method_definition"}
)
_JS_VALUES = frozenset(
    {"arrow_function", "function_expression", "function", "generator_function"}
)
_TS = Spec(
    grammar="typescript",
    functions=_JS_FUNCTIONS
    | {"method_signature", "abstract_method_signature", "function_signature"},
    classes=frozenset(
        {
            "class_declaration", "abstract_class_declaration", "class",
            "interface_declaration", "enum_declaration",
        }
    ),
    namespaces=frozenset({"internal_module", "module"}),
    transparent=frozenset({"ERROR", "ambient_declaration", "expression_statement"}),
    wrappers=frozenset({"export_statement"}),
    variables=frozenset({"lexical_declaration", "variable_declaration"}),
    fields=frozenset({"public_field_definition", "field_definition"}),
    function_values=_JS_VALUES,
)
_C_NAMESPACES = frozenset({"preproc_ifdef", "preproc_if", "preproc_else", "preproc_elif"})

SPECS: dict[str, Spec] = {
    "python": Spec(
        grammar="python",
        functions=frozenset({"function_definition"}),
        classes=frozenset({"class_definition"}),
        wrappers=frozenset({"decorated_definition"}),
    ),
    "javascript": Spec(
        grammar="javascript",
        functions=_JS_FUNCTIONS,
        classes=frozenset({"class_declaration", "class"}),
        wrappers=frozenset({"export_statement"}),
        variables=frozenset({"lexical_declaration", "variable_declaration"}),
        fields=frozenset({"field_definition"}),
        function_values=_JS_VALUES,
    ),
    "typescript": _TS,
    "tsx": replace(_TS, grammar="tsx"),
    "go": Spec(
        grammar="go",
        functions=frozenset({"function_declaration", "method_declaration"}),
        classes=frozenset({"type_declaration"}),
    ),
    "rust": Spec(
        grammar="rust",
        functions=frozenset({"function_item", "function_signature_item", "macro_definition"}),
        classes=frozenset(
            {"impl_item", "trait_item", "struct_item", "enum_item", "union_item"}
        ),
        namespaces=frozenset({"mod_item"}),
        attachable=frozenset({"line_comment", "block_comment", "attribute_item"}),
    ),
    "java": Spec(
        grammar="java",
        functions=frozenset({"method_declaration", "constructor_declaration"}),
        classes=frozenset(
            {
                "class_declaration", "interface_declaration", "enum_declaration",
                "record_declaration", "annotation_type_declaration",
            }
        ),
        attachable=frozenset({"line_comment", "block_comment"}),
        flatten=frozenset({"enum_body_declarations"}),
    ),
    "c": Spec(
        grammar="c",
        functions=frozenset({"function_definition"}),
        classes=frozenset({"struct_specifier", "union_specifier", "enum_specifier"}),
        transparent=_C_NAMESPACES | {"ERROR"},
    ),
    "cpp": Spec(
        grammar="cpp",
        functions=frozenset({"function_definition"}),
        classes=frozenset(
            {"class_specifier", "struct_specifier", "union_specifier", "enum_specifier"}
        ),
        namespaces=frozenset({"namespace_definition"}),
        transparent=_C_NAMESPACES | {"ERROR", "linkage_specification"},
        wrappers=frozenset({"template_declaration"}),
    ),
}

# `.h` files are labelled C, but many are C++: the C grammar crawls through their
# templates (4x slower, all errors), so such headers are parsed as C++.
CPP_MARKERS = re.compile(r"^\s*(?:class|namespace|template)\b|\bstd::|^\s*public:", re.M)

# A pathological input must not stall indexing: parsing stops after this long (then
# the file gets line windows).
_PARSE_BASE_S = 1.0
_PARSE_PER_BYTE_S = 1.0 / 256_000


def syntax_languages() -> frozenset[str]:
    """Languages chunked by syntax; every other language falls back to line windows."""
    return frozenset(SPECS)


_local = threading.local()


def _parser(grammar: str) -> Parser:
    # tree-sitter parsers are not thread-safe: one per thread and grammar.
    cache: dict[str, Parser] | None = getattr(_local, "parsers", None)
    if cache is None:
        cache = {}
        _local.parsers = cache
    parser = cache.get(grammar)
    if parser is None:
        parser = get_parser(cast("SupportedLanguage", grammar))
        cache[grammar] = parser
    return parser


def parse(grammar: str, source: bytes) -> Tree:
    """Parse with a time budget; raises ValueError when it runs out."""
    parser = _parser(grammar)
    deadline = time.monotonic() + _PARSE_BASE_S + len(source) * _PARSE_PER_BYTE_S

    def read(offset: int, _point: Point) -> bytes:
        return source[offset : offset + 65536]

    def over_time(_offset: int, _has_error: bool) -> bool:
        return time.monotonic() > deadline

    try:
        # Only the callback form of parse() reports progress (and so can be stopped).
        return parser.parse(read, progress_callback=over_time)
    except ValueError:
        parser.reset()  # else the next parse would resume this one
        raise

