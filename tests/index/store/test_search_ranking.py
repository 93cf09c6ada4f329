"""Search through the service on each store: names find their definitions first, and a
test file ranks below the code it tests (index/ranking.py on both stores' BM25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimiverse.index.service import CodebaseService
from mimiverse.routing.router import Router
from tests.index.test_service import settings
from tests.support.embedder import BowEmbedder

FILES = {
    "lib/config.js": """const fs = require('fs');

function parseConfigFile(path) {
  const text = fs.readFileSync(path, 'utf8');
  return JSON.parse(text);
}

module.exports = { parseConfigFile };
""",
    "lib/index.js": """const { parseConfigFile } = require('./config');
const { parseConfigFile: parseConfigFileAgain } = require('./config');

module.exports = { parseConfigFile, parseConfigFileAgain, version: 1 };
""",
    "lib/cli.js": """const { parseConfigFile } = require('./config');

function main(argv) {
  const config = parseConfigFile(argv[2]);
  const fallback = parseConfigFile('default.json');
  return config || fallback;
}
""",
    "tests/test_invoice.py": """from shop.invoice import invoice_total


def test_invoice_total_adds_line_amounts():
    lines = [{"amount": 2}, {"amount": 3}]
    assert invoice_total(lines) == 5
    assert invoice_total([]) == 0
    assert invoice_total(lines[:1]) == 2
""",
    "shop/invoice.py": """def invoice_total(lines):
    total = 0
    for line in lines:
        total += line["amount"]
    return total
""",
}


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    if request.param == "postgres":
        return {"store": "postgres", "url": request.getfixturevalue("postgres_conninfo")}
    return {"store": "sqlite", "data_dir": str(tmp_path / "data")}


async def test_definitions_first_and_tests_below_code(
    tmp_path: Path, store_settings: dict[str, object]
) -> None:
    root = tmp_path / "repo"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    s = settings(**store_settings)
    service = CodebaseService(s.index, Router(s, {"bow": BowEmbedder()}), [str(tmp_path)])
    try:
        job = await service.start(str(root))
        await service.wait(job.root)
        assert job.state == "ready", job.error
        for mode in ("lexical", "hybrid"):
            found = await service.search("parseConfigFile", mode=mode, limit=5)
            top = found.hits[0].chunk
            assert (top.path, top.symbol, top.kind) == ("lib/config.js", "parseConfigFile",
                                                        "function"), mode
            assert {h.chunk.path for h in found.hits} >= {"lib/index.js", "lib/cli.js"}

            code = await service.search("invoice total", mode=mode, limit=5)
            assert [h.chunk.path for h in code.hits][:2] == ["shop/invoice.py",
                                                             "tests/test_invoice.py"], mode
            tests = await service.search("tests of invoice total", mode=mode, limit=5)
            assert tests.hits[0].chunk.path == "tests/test_invoice.py", mode
    finally:
        await service.aclose()
