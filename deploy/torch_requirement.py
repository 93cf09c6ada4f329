"""Print the torch requirement of the `embed` extra (e.g. `torch==2.13.0`).

deploy/Dockerfile installs exactly that version from the PyTorch CPU index before the
package, so pip finds torch already satisfied and never pulls the multi-GB CUDA build
from PyPI. Reading the pin here keeps pyproject.toml its only source.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def torch_requirement(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    for requirement in project["optional-dependencies"]["embed"]:
        name = re.match(r"\s*([A-Za-z0-9_.\-]+)", requirement)
        if name and name.group(1).lower() == "torch":
            if "==" not in requirement:
                raise SystemExit(f"{pyproject}: torch must be pinned (==) in the embed extra")
            return str(requirement).strip()
    raise SystemExit(f"{pyproject}: the embed extra does not list torch")


if __name__ == "__main__":
    print(torch_requirement(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
