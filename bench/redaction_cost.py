"""Secret redaction's share of indexing: CPU of `redact` against chunking, same files.

Real Python files from the virtualenv's site-packages, as bench/index_speed.py uses.

    python bench/redaction_cost.py [--files 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl

bl.ensure_venv()


def main() -> None:
    from mimiverse.index.chunker import chunk_file
    from mimiverse.index.redaction import redact

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in site.rglob("*.py") if p.is_file() and p.stat().st_size > 200)
    step = len(files) / opts.files
    picked = [files[int(i * step)] for i in range(opts.files)]
    texts = [(str(p), p.read_text(errors="replace")) for p in picked]
    started = time.process_time()
    redact("password = 'x1234567'", "a.py", "python")  # imports detect-secrets, once
    import_s = time.process_time() - started
    for name, work in (("redact", lambda p, t: redact(t, p, "python")),
                       ("chunk", lambda p, t: chunk_file(p, t, "python"))):
        runs = []
        for _ in range(opts.runs):
            started = time.process_time()
            for path, text in texts:
                work(path, text)
            runs.append(time.process_time() - started)
        print(f"{name}: {statistics.median(runs):.3f} s CPU for {len(texts)} files")
    found: Counter[str] = Counter()
    for path, text in texts:
        found.update(redact(text, path, "python").found)
    megabytes = sum(len(t) for _, t in texts) / 1e6
    print(f"first call (imports detect-secrets): {import_s:.3f} s CPU; "
          f"{megabytes:.1f} MB of text; found {dict(found)}")


if __name__ == "__main__":
    main()
