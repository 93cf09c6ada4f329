"""Split source files into chunks that follow the code's structure.

With a tree-sitter grammar (Python, JavaScript, TypeScript/TSX, Go, Rust, Java, C, C++):
every function and method with a body is a chunk of its own, with 1-based inclusive line
ranges and symbol names (methods as `Class.method`); leading comments, decorators and
attributes stay with the definition they describe. A class with methods becomes its
header (with fields and one-line members) plus one chunk per method: a method is what
people search for, and inside a long class it would lie past what the embedder reads. A
function too large is cut into line windows that keep its symbol and kind. Plain code
between definitions (imports, constants) is merged up to the limits, so search is not
flooded with one-line chunks. Namespaces, `extern "C"`, preprocessor blocks and
parse errors are looked through, so definitions inside them are still found.

Without a grammar, or when parsing fails, the file is cut into overlapping line windows.
Either way every non-blank line belongs to at least one chunk.
"""


from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from operator import add

from tree_sitter import Node

from mimiverse.index.chunk_languages import CPP_MARKERS, SPECS, Spec, parse, syntax_languages
from mimiverse.index.chunk_syntax import (
    body_of,
    class_name,
    field_text,
    function_name,
    function_variable,
    qualify,
    rows,
    wrapped,
)
from mimiverse.index.model import Chunk

__all__ = ["chunk_file", "embedding_text", "syntax_languages"]

_PUNCTUATION = frozenset({"{", "}", ";", ",", "(", ")", "[", "]"})
# Closing braces, `#endif`, comments: lines that carry no code of their own.
_TRIVIAL_LINE = re.compile(r"[\s{}()\[\];,]*(?:(?://|#|--|/\*|\*).*)?")


@dataclass(slots=True)
class _Unit:
    """A run of lines at one level of the tree (0-based rows, inclusive)."""

    start: int
    end: int
    kind: str  # function | method | class | other
    symbol: str | None = None
    node: Node | None = None  # a class, kept to split it by member when too large
    attach: bool = False  # a comment or attribute that belongs to the next definition
    header: bool = False  # a large class's header: its symbol names the merged chunk

    @property
    def is_def(self) -> bool:
        return self.kind != "other"


@dataclass(slots=True)
class _Piece:
    """A chunk-to-be: a line range with its kind and symbol."""

    start: int
    end: int
    kind: str
    symbol: str | None
    strong: bool  # the symbol names a definition (not just the enclosing class)
    window: bool = False


class _Chunker:
    def __init__(
        self,
        lines: list[str],
        spec: Spec | None,
        max_lines: int,
        max_chars: int,
        min_lines: int,
        source: bytes = b"",
    ) -> None:
        self.lines = lines
        self.spec = spec
        self.source = source  # what the tree was parsed from: names are sliced out of it
        self.max_lines = max_lines
        self.max_chars = max_chars
        self.min_lines = min_lines
        # Prefix sums of line lengths (+1 for the newline): chars of a range in O(1).
        # (running sum of lengths) + (newlines so far), computed in C: files have many lines.
        self.offsets = list(map(add, accumulate(map(len, lines), initial=0), range(len(lines) + 1)))
        self.overlap = max(0, min(3, max_lines // 10))

    # -- sizes ---------------------------------------------------------------------

    def fits(self, start: int, end: int) -> bool:
        return (
            end - start + 1 <= self.max_lines
            and self.offsets[end + 1] - self.offsets[start] - 1 <= self.max_chars
        )

    def windows(self, start: int, end: int) -> list[tuple[int, int]]:
        """Cut [start, end] into ranges within the limits, overlapping a little."""
        out: list[tuple[int, int]] = []
        offsets, max_lines, max_chars = self.offsets, self.max_lines, self.max_chars
        s = start
        while True:
            # The longest range from s that fits (at least one line): a binary search in
            # the prefix sums rather than a `fits` call per line.
            longest = bisect_right(offsets, offsets[s] + max_chars + 1) - 2
            e = max(s, min(end, s + max_lines - 1, longest))
            out.append((s, e))
            if e >= end:
                return out
            s = max(e + 1 - self.overlap, s + 1)

    # -- collecting units from the tree --------------------------------------------

    def collect(self, children: list[Node], scope: str | None, in_class: bool) -> list[_Unit]:
        spec = self.spec
        assert spec is not None
        units: list[_Unit] = []
        last = len(children) - 1
        for index, child in enumerate(children):
            kind = child.type
            if not child.is_named and kind in _PUNCTUATION and index in (0, last):
                continue  # a body's own braces: its header and closing lines hold them
            if kind in spec.flatten:
                units.extend(self.collect(child.children, scope, in_class))
                continue
            if kind in spec.namespaces or kind in spec.transparent:
                units.extend(self.flatten(child, scope, in_class))
                continue
            units.append(self.classify(child, scope, in_class))
        return self.attach(units)

    def flatten(self, node: Node, scope: str | None, in_class: bool) -> list[_Unit]:
        """Chunk a namespace's members at this level; its own lines stay as plain code."""
        assert self.spec is not None
        if node.type in self.spec.namespaces:
            name = (field_text(self.source, node, "name") or "").strip("\"'")
            if name:
                scope = f"{scope}.{name}" if scope else name
        # Only a real body field: an ERROR node may hold a stray `block` among the rest.
        body = node.child_by_field_name("body")
        members = self.collect((body or node).children, scope, in_class)
        start, end = rows(node)
        if not members:
            return [_Unit(start, end, "other")]
        first, last = members[0], members[-1]
        out: list[_Unit] = []
        if first.start > start:
            out.append(_Unit(start, first.start - 1, "other"))
        else:
            first.start = start
        out.extend(members)
        if end > last.end:
            out.append(_Unit(last.end + 1, end, "other"))
        return out

    def classify(self, node: Node, scope: str | None, in_class: bool) -> _Unit:
        spec = self.spec
        assert spec is not None
        start, end = rows(node)
        inner = node
        if node.type in spec.wrappers:
            found = wrapped(node, spec)
            if found is None:
                return _Unit(start, end, "other")
            inner = found
        if inner.type in spec.variables or inner.type in spec.fields:
            name = function_variable(self.source, inner, spec)
            if name is None:
                return _Unit(start, end, "other")
            kind = "method" if in_class else "function"
            return _Unit(start, end, kind, qualify(scope, name))
        if inner.type in spec.functions:
            name, qualified = function_name(self.source, inner)
            kind = "method" if in_class or qualified else "function"
            return _Unit(start, end, kind, qualify(scope, name))
        if inner.type in spec.classes:
            name = class_name(self.source, inner)
            if spec.grammar in ("c", "cpp") and body_of(inner) is None:
                return _Unit(start, end, "other")  # `struct x;` is a declaration
            if spec.grammar == "go" and name is None:
                return _Unit(start, end, "other")  # a grouped `type ( ... )` block
            return _Unit(start, end, "class", qualify(scope, name), node=inner)
        attach = node.type in spec.attachable or node.type == "decorator"
        return _Unit(start, end, "other", attach=attach)

    def attach(self, units: list[_Unit]) -> list[_Unit]:
        """Give comments and attributes to the definition right below them; drop overlaps."""
        out: list[_Unit] = []
        for unit in units:
            if unit.is_def:
                while out and out[-1].attach and out[-1].end >= unit.start - 1:
                    unit.start = min(unit.start, out.pop().start)
            if out and unit.start <= out[-1].end:
                out[-1] = _combine(out[-1], unit)
            else:
                out.append(unit)
        return out

    # -- emitting pieces -----------------------------------------------------------

    def emit(self, units: list[_Unit], scope: str | None) -> list[_Piece]:
        pieces: list[_Piece] = []
        group: list[_Unit] = []

        def flush() -> None:
            if group:
                pieces.append(self.group_piece(group, scope))
                group.clear()

        for unit in units:
            # Every definition with a body is a chunk of its own (one-line ones, such as
            # signatures in an interface, are grouped like plain code).
            if unit.is_def and not unit.header and unit.end > unit.start:
                flush()
                pieces.extend(self.emit_def(unit))
            elif not self.fits(unit.start, unit.end):
                flush()
                kind = "class" if unit.header else "block"
                for s, e in self.windows(unit.start, unit.end):
                    pieces.append(_Piece(s, e, kind, unit.symbol or scope, unit.header, True))
            elif group and self.fits(group[0].start, unit.end):
                group.append(unit)
            else:
                flush()
                group.append(unit)
        flush()
        return self.merge_small(pieces)

    def group_piece(self, group: list[_Unit], scope: str | None) -> _Piece:
        start, end = group[0].start, group[-1].end
        header = next((u for u in group if u.header), None)
        defs = [u for u in group if u.is_def]
        if header is not None:
            return _Piece(start, end, "class", header.symbol, True)
        if len(defs) == 1:
            return _Piece(start, end, defs[0].kind, defs[0].symbol, True)
        return _Piece(start, end, "block", scope, False)

    def emit_def(self, unit: _Unit) -> list[_Piece]:
        whole = [_Piece(unit.start, unit.end, unit.kind, unit.symbol, True)]
        # A class is its header and fields, and each method on its own: a method is what
        # people search for, and inside a long class it would be past the embedder's window.
        if unit.kind == "class" and unit.node is not None:
            split = self.split_class(unit)
            if split is not None and (len(split) > 1 or not self.fits(unit.start, unit.end)):
                return split
        if self.fits(unit.start, unit.end):
            return whole
        return [
            _Piece(s, e, unit.kind, unit.symbol, True, window=True)
            for s, e in self.windows(unit.start, unit.end)
        ]

    def split_class(self, unit: _Unit) -> list[_Piece] | None:
        assert unit.node is not None
        body = body_of(unit.node)
        if body is None:
            return None
        members = self.collect(body.children, unit.symbol, in_class=True)
        if not any(m.is_def for m in members):
            return None
        first, last = members[0], members[-1]
        # The closing lines (`}`, `};`) go with the last member.
        last.end = max(last.end, unit.end)
        header_end = first.start - 1
        if header_end < unit.start:
            first.start = unit.start
            first.header, first.symbol, first.kind = True, unit.symbol, "class"
            head: list[_Unit] = []
        else:
            head = [_Unit(unit.start, header_end, "class", unit.symbol, header=True)]
        return self.emit(head + members, unit.symbol)

    def cover(self, pieces: list[_Piece]) -> list[_Piece]:
        """Trim blank edges; give lines that no piece holds to a neighbour, or their own."""
        lines = self.lines
        trimmed: list[_Piece] = []
        for candidate in sorted(pieces, key=lambda p: (p.start, p.end)):
            start, end = candidate.start, candidate.end
            while start <= end and not lines[start].strip():
                start += 1
            while end >= start and not lines[end].strip():
                end -= 1
            if start <= end:
                candidate.start, candidate.end = start, end
                trimmed.append(candidate)
        out: list[_Piece] = []
        covered_to = -1
        following: list[_Piece | None] = [*trimmed, None]  # None: the end of the file
        for piece in following:
            stop = piece.start if piece is not None else len(lines)
            gap = [row for row in range(covered_to + 1, stop) if lines[row].strip()]
            if gap:
                first, last = gap[0], gap[-1]
                if out and self.fits(out[-1].start, last):
                    out[-1].end = last
                elif piece is not None and self.fits(first, piece.end):
                    piece.start = first
                else:
                    out.extend(
                        _Piece(s, e, "block", None, False, window=True)
                        for s, e in self.windows(first, last)
                    )
            if piece is not None:
                out.append(piece)
                covered_to = max(covered_to, piece.end)
        return out

    def merge_small(self, pieces: list[_Piece]) -> list[_Piece]:
        """Fold pieces under min_lines into a neighbour when the result still fits."""
        out: list[_Piece] = []
        i = 0
        while i < len(pieces):
            piece = pieces[i]
            if piece.end - piece.start + 1 < self.min_lines and not piece.window:
                if out and self.can_merge(out[-1], piece, piece):
                    out[-1] = _merged(out[-1], piece)
                    i += 1
                    continue
                if i + 1 < len(pieces) and self.can_merge(piece, pieces[i + 1], piece):
                    pieces[i + 1] = _merged(piece, pieces[i + 1])
                    i += 1
                    continue
            out.append(piece)
            i += 1
        return out

    def can_merge(self, a: _Piece, b: _Piece, small: _Piece) -> bool:
        if a.strong and b.strong:
            return False  # one of the two definitions would lose its symbol
        # Code before a definition (imports, declarations) reads well as its preamble;
        # code after one joins it only if it is just braces and comments.
        if small is b and a.strong and not b.strong and not self.trivial(b.start, b.end):
            return False
        return self.fits(a.start, b.end)

    def trivial(self, start: int, end: int) -> bool:
        return all(_TRIVIAL_LINE.fullmatch(line) for line in self.lines[start : end + 1])


def _merged(a: _Piece, b: _Piece) -> _Piece:
    named = a if a.strong or not b.strong else b
    kind = named.kind if named.strong else "block"
    return _Piece(a.start, b.end, kind, named.symbol, named.strong, a.window or b.window)


def _combine(a: _Unit, b: _Unit) -> _Unit:
    """Two units sharing a line become one; a definition keeps its name over plain code."""
    start, end = min(a.start, b.start), max(a.end, b.end)
    if a.is_def and b.is_def:
        return _Unit(start, end, "other")
    named = a if a.is_def else b
    return _Unit(start, end, named.kind, named.symbol, named.node, attach=a.attach and b.attach)



def _line_windows(chunker: _Chunker, last: int) -> list[_Piece]:
    return [
        _Piece(s, e, "window", None, False, window=True) for s, e in chunker.windows(0, last)
    ]


def chunk_file(
    path: str,
    text: str,
    language: str | None,
    *,
    max_chunk_lines: int = 80,
    max_chunk_chars: int = 3000,
    min_chunk_lines: int = 4,
) -> list[Chunk]:
    """Chunks of `text` in line order; every non-blank line is in at least one of them."""
    if max_chunk_lines < 1 or max_chunk_chars < 1 or min_chunk_lines < 1:
        raise ValueError("chunk limits must be positive")
    lines = text.split("\n")
    crlf = "\r" in text
    if crlf:
        lines = [line.removesuffix("\r") for line in lines]
    if not any(line.strip() for line in lines):
        return []
    spec = SPECS.get(language) if language is not None else None
    if language == "c" and CPP_MARKERS.search(text):
        spec = SPECS["cpp"]
    chunker = _Chunker(lines, spec, max_chunk_lines, max_chunk_chars, min_chunk_lines)
    last = len(lines) - 1
    pieces: list[_Piece] | None = None
    if spec is not None:
        try:
            chunker.source = text.encode("utf-8", errors="surrogatepass")
            tree = parse(spec.grammar, chunker.source)
            units = chunker.collect(tree.root_node.children, None, in_class=False)
            pieces = chunker.emit(units, None)
        except (ValueError, RecursionError, LookupError):
            pieces = None  # a grammar that cannot load or a tree too deep: use windows
    if not pieces:
        pieces = _line_windows(chunker, last)
    return _materialise(path, chunker, None if crlf else text, language, chunker.cover(pieces))


def _materialise(
    path: str, chunker: _Chunker, text: str | None, language: str | None, pieces: list[_Piece]
) -> list[Chunk]:
    lines, offsets = chunker.lines, chunker.offsets
    return [
        Chunk(
            path=path,
            start_line=p.start + 1,
            end_line=p.end + 1,
            # Without CRs the lines are the text split at newlines: slice it, not join them.
            text=text[offsets[p.start] : offsets[p.end + 1] - 1]
            if text is not None
            else "\n".join(lines[p.start : p.end + 1]),
            language=language,
            symbol=p.symbol,
            kind=p.kind,
        )
        for p in pieces
    ]


def embedding_text(path: str, symbol: str | None, text: str) -> str:
    """What the embedder reads for a chunk: a header naming where it is, then its code.

    `httpx/_urls.py URL.scheme`: a three-line accessor says little on its own, and the
    model reads only its first 256 word pieces, so a long chunk is this header and the
    start of its body.
    """
    return f"{path} {symbol}\n{text}" if symbol else f"{path}\n{text}"
