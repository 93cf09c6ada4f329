"""`mimiverse eval ask` from the command line, against a loopback OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mimiverse.cli.main import app
from tests.cli.test_cli import write_config
from tests.servers.harness import ServerHandle

GEOMETRY = '''
def circle_area(radius):
    """Compute the area of a circle from its radius."""
    return 3.14159 * radius * radius


def rectangle_perimeter(width, height):
    """Return the perimeter of a rectangle given width and height."""
    return 2 * (width + height)


def triangle_area(base, height):
    """Compute the area of a triangle from base and height."""
    return base * height / 2
'''


def test_eval_ask_scores_the_sources(tmp_path: Path, openai_server: ServerHandle) -> None:
    config = write_config(tmp_path, openai_server.url, kind="openai")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "geometry.py").write_text(GEOMETRY)
    (pkg / "units.py").write_text('def to_metres(feet):\n    """Metres, please."""\n'
                                  "    return feet * 0.3048\n")
    result = CliRunner().invoke(app, ["eval", "ask", str(pkg), "--json", "--config",
                                      str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # "Metres, please." has under three words: not a question; the three others find
    # their function among the sources (three small functions, a chunk each).
    assert {k: report[k] for k in ("questions", "recall@5", "recall@10")} == {
        "questions": 3, "recall@5": 1.0, "recall@10": 1.0}
    assert report["sources_median"] == 4.0  # geometry.py's three chunks and units.py's

    table = CliRunner().invoke(app, ["eval", "ask", str(pkg), "--config", str(config)])
    assert table.exit_code == 0 and "3 questions" in table.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["eval", "ask", str(empty), "--config", str(config)])
    assert result.exit_code == 1 and "no documented Python functions" in result.stderr
