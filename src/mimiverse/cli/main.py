"""The `mimiverse` command."""

from __future__ import annotations

import typer

from mimiverse.cli.complete import chat, complete
from mimiverse.cli.doctor import doctor, models
from mimiverse.cli.evaluate import eval_app
from mimiverse.cli.index import index, search
from mimiverse.cli.pull import pull
from mimiverse.cli.serve import serve
from mimiverse.cli.triton import triton_app

app = typer.Typer(
    name="mimiverse",
    help="Self-hosted AI backend for code editors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for command in (serve, complete, chat, models, pull, doctor, index, search):
    app.command()(command)
app.add_typer(eval_app, name="eval")
app.add_typer(triton_app, name="triton")

if __name__ == "__main__":
    app()
