"""The indexer's pipe protocol: every outcome survives the JSON round trip exactly."""

from __future__ import annotations

import io
from pathlib import Path

from mimiverse.index import wire
from mimiverse.index.model import Chunk, FileState, IndexTerms
from mimiverse.index.walker import SkipReason, SourceFile


def test_tasks_and_outcomes_round_trip() -> None:
    items = [(SourceFile("a/b.py", Path("/r/a/b.py"), 10, 123, "python"), "ab" * 32),
             (SourceFile("c.txt", Path("/r/c.txt"), 0, 5, None), None)]
    state = FileState("a/b.py", 10, 123, "ab" * 32, "python")
    terms = IndexTerms.of(["get", "user", "get"])
    outcomes: list[wire.Outcome] = [
        SkipReason("binary"),
        state,
        (state, [Chunk("a/b.py", 1, 2, "getUser()\n", "python", "get", "function", terms),
                 Chunk("a/b.py", 3, 9, "x = 'é'\n", None, None, "window")],
         {"private-key": 1, "jwt": 2}),
    ]
    stream = io.BytesIO()
    wire.send(stream, [7, wire.encode_items(items)])
    wire.send(stream, [7, [wire.encode_outcome(o) for o in outcomes]])
    stream.seek(0)
    number, raw_items = wire.receive(stream)
    assert number == 7 and wire.decode_items(raw_items) == items
    _, raw = wire.receive(stream)
    back = [wire.decode_outcome(o) for o in raw]
    assert back == outcomes
    assert isinstance(back[0], SkipReason)
    chunks = back[2][1]  # type: ignore[index]
    assert chunks[0].terms == terms and chunks[1].terms is None
    assert wire.receive(stream) is None  # the end of the stream


def test_a_cut_off_message_reads_as_the_end() -> None:
    stream = io.BytesIO()
    wire.send(stream, [1, None])
    stream = io.BytesIO(stream.getvalue()[:-2])
    assert wire.receive(stream) is None
