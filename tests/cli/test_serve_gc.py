"""The server settles the process (garbage collector, log records) once the app has
started; checked in a process of its own (freezing would reach into this one's heap)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio, gc, logging
from mimiverse.app import create_app
from mimiverse.config import Settings
from mimiverse.server import GC_THRESHOLDS, Server, uvicorn_config

async def main():
    settings = Settings()
    server = Server(uvicorn_config(create_app(settings), settings, port=0))
    before = (gc.get_threshold(), gc.get_freeze_count(), logging.logThreads)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    after = (gc.get_threshold(), gc.get_freeze_count(), logging.logThreads)
    server.should_exit = True
    await serving
    print(before[0] != GC_THRESHOLDS, before[1] == 0, before[2],
          after[0] == GC_THRESHOLDS, after[1] > 10000, not after[2])

asyncio.run(main())
"""


def test_serve_freezes_what_start_up_made_and_lightens_log_records() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"] * 6
