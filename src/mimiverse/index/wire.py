"""What the indexer and its worker processes send each other over pipes: length-prefixed
JSON (orjson) of plain lists, never pickle, so nothing read from a pipe can run code.

    setup    [max_file_bytes, tokenizer name or null]
    task     [task number, [[path, abs_path, size, mtime_ns, language, old sha256], ...]]
    answer   [task number, [outcome, ...] or null (the indexer redoes the task)]
    outcome  ["skip", reason] | ["same", state] | ["chunks", state, [chunk, ...], redacted]
    state    [path, size, mtime_ns, sha256, language]
    chunk    [path, start_line, end_line, text, language, symbol, kind, terms or null]
    terms    [joined, distinct, total]
    redacted {kind: count} of the secrets replaced in the file
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from mimiverse.index.model import Chunk, FileState, IndexTerms
from mimiverse.index.walker import SkipReason, SourceFile

# A changed file and the sha256 the index has of it.
Item = tuple[SourceFile, str | None]
# What reading one file gives: a skip reason, the FileState of a file whose content did
# not change (touched), or the FileState, chunks and secrets redacted (by kind) of a
# changed one.
Outcome = str | FileState | tuple[FileState, list[Chunk], dict[str, int]]

_FRAME = struct.Struct("!Q")  # every message: its length, then its JSON


def send(stream: IO[bytes], message: object) -> None:
    data = orjson.dumps(message)
    stream.write(_FRAME.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream (or of a cut-off one)."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    data = stream.read(size)
    return orjson.loads(data) if len(data) == size else None


def encode_items(items: Sequence[Item]) -> list[list[Any]]:
    return [[s.path, str(s.abs_path), s.size, s.mtime_ns, s.language, sha] for s, sha in items]


def decode_items(raw: list[list[Any]]) -> list[Item]:
    return [(SourceFile(path, Path(abs_path), size, mtime_ns, language), sha)
            for path, abs_path, size, mtime_ns, language, sha in raw]


def _state(s: FileState) -> list[Any]:
    return [s.path, s.size, s.mtime_ns, s.sha256, s.language]


def encode_outcome(outcome: Outcome) -> list[Any]:
    if isinstance(outcome, str):
        return ["skip", str(outcome)]
    if isinstance(outcome, FileState):
        return ["same", _state(outcome)]
    state, chunks, redacted = outcome
    return ["chunks", _state(state), [
        [c.path, c.start_line, c.end_line, c.text, c.language, c.symbol, c.kind,
         None if c.terms is None else list(c.terms)]
        for c in chunks
    ], redacted]


def decode_outcome(raw: list[Any]) -> Outcome:
    kind = raw[0]
    if kind == "skip":
        return SkipReason(raw[1])
    state = FileState(*raw[1])
    if kind == "same":
        return state
    return state, [
        Chunk(path, start, end, text, language, symbol, chunk_kind,
              None if terms is None else IndexTerms(*terms))
        for path, start, end, text, language, symbol, chunk_kind, terms in raw[2]
    ], raw[3]
