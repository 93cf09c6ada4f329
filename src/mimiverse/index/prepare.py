"""What one changed file becomes before it is stored, and the worker process that does it.

`prepare` reads a file (O_NOFOLLOW, size and binary checks: walker.read_source), redacts
its secrets in the whole text (so no chunk boundary cuts a key in two), chunks it, and
with a tokenizer gives each chunk its index terms. The indexer calls it for the first
files and whenever it would otherwise wait; `worker_main` is the same work in a worker
process (`python -P -c`), fed tasks over its stdin in length-prefixed JSON (wire.py).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from mimiverse.index import wire
from mimiverse.index.chunker import chunk_file
from mimiverse.index.model import Chunk, FileState, IndexTerms
from mimiverse.index.redaction import redact
from mimiverse.index.store import Tokenizer, index_terms
from mimiverse.index.tokenize import tokens
from mimiverse.index.walker import SourceFile, read_source
from mimiverse.index.wire import Outcome

WORKER_NICE = 5  # workers run below the indexer (see worker_main)
# Tokenizers a worker process can use, by name (only names cross the pipe).
TOKENIZERS: dict[str, Tokenizer] = {"code": tokens}


def prepare(
    source: SourceFile, old_sha256: str | None, max_file_bytes: int,
    tokenize: Tokenizer | None = None,
) -> Outcome:
    """Read and chunk one file; with `tokenize`, the chunks carry their index terms."""
    read = read_source(source, max_file_bytes=max_file_bytes)
    if isinstance(read, str):
        return read
    state = FileState(source.path, source.size, source.mtime_ns, read.sha256, source.language)
    if read.sha256 == old_sha256:
        return state
    # The whole file, before chunking: a secret cut by a chunk boundary is still found.
    redacted = redact(read.text, source.path, source.language)
    chunks = chunk_file(source.path, redacted.text, source.language)
    if tokenize is not None:
        path_terms = tokenize(source.path)  # the same for every chunk of the file
        chunks = [
            Chunk(c.path, c.start_line, c.end_line, c.text, c.language, c.symbol, c.kind,
                  _terms(index_terms(c, tokenize, path_terms)))
            for c in chunks
        ]
    return state, chunks, dict(redacted.found)


def _terms(terms: list[str]) -> IndexTerms:
    # IndexTerms.of, but the distinct terms in set order (a third cheaper): the stores
    # only count them.
    return IndexTerms(" ".join(terms), " ".join(set(terms)), len(terms))


def worker_main() -> None:
    """A worker process: (task id, items) in on stdin, (task id, outcomes) out on stdout.

    It exits when stdin closes, which is also what happens when the indexer dies.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the indexer's to handle
    if hasattr(os, "nice"):
        # Below the indexer: its writes, which make files searchable, never wait for a
        # core (else a backlog of writes is left once the workers finish).
        os.nice(WORKER_NICE)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library's stray print must not corrupt the protocol
    stdin = sys.stdin.buffer
    setup = wire.receive(stdin)
    if setup is None:
        return
    max_file_bytes, tokenizer_name = setup
    tokenize = TOKENIZERS[tokenizer_name] if tokenizer_name else None
    while (message := wire.receive(stdin)) is not None:
        task, items = message
        outcomes: list[list[object]] | None
        try:
            outcomes = [wire.encode_outcome(prepare(s, sha, max_file_bytes, tokenize))
                        for s, sha in wire.decode_items(items)]
        except Exception:  # the indexer redoes the task itself, and reports the error
            traceback.print_exc()
            outcomes = None
        try:
            wire.send(out, [task, outcomes])
        except BrokenPipeError:
            break
    # No interpreter teardown (freeing every cached token and module, ~40 ms): the CPU is
    # the indexer's, for its last writes.
    sys.stderr.flush()
    os._exit(0)
