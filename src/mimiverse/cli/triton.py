"""`mimiverse triton prepare --out DIR`: a Triton model repository for the embedding model.

The model is the configured sentence-transformers one (the packaged all-MiniLM-L6-v2 by
default), exported to ONNX the way the embedded backend does it, with pooling and
normalisation in the graph and the tokenizer as a Python-backend model in front (see
mimiverse.triton_repo). Triton serves the fp32 model; the embedded default is its int8
variant, whose vectors differ slightly, so the printed configuration names the fp32 model
for the route: Triton and the embedded fallback then fill one index with the same vectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mimiverse.backends.sentence_transformers import SentenceTransformersBackend
from mimiverse.cli.common import ConfigOption, console, fail, run, settings_from
from mimiverse.config import BackendSettings, Settings
from mimiverse.triton_repo import PreparedRepository, prepare

triton_app = typer.Typer(help="NVIDIA Triton Inference Server helpers.", no_args_is_help=True)


def embedding_model_config(settings: Settings) -> BackendSettings:
    """The sentence-transformers backend the embedding route uses, else any configured
    one, else the packaged default model."""
    by_name = {b.name: b for b in settings.backends}
    routed = [by_name[n] for n in settings.models.embedding.backends]
    for config in (*routed, *settings.backends):
        if config.kind == "sentence-transformers":
            return config
    return BackendSettings(name="embedded", kind="sentence-transformers")


async def export_folder(config: BackendSettings) -> tuple[Path, str]:
    """The model's fp32 ONNX export (made and cached on first use) and the model's name."""
    backend = SentenceTransformersBackend(config, engine="onnx")
    try:
        await backend.embed_batch(backend.model_name, ["def probe(): pass"])
        folder = backend.model_folder
    finally:
        await backend.aclose()
    if folder is None:
        raise RuntimeError("the ONNX export did not load")
    return folder, backend.model_name


@triton_app.command("prepare")
def prepare_command(
    out: Annotated[Path, typer.Option("--out", help="model repository folder to write",
                                      file_okay=False)],
    name: Annotated[str | None, typer.Option(
        help="Triton model name (default: the embedding model's name)")] = None,
    max_batch: Annotated[int, typer.Option(help="max_batch_size of the models",
                                           min=1, max=4096)] = 64,
    device: Annotated[str, typer.Option(help="where the encoder runs: gpu or cpu")] = "gpu",
    config: ConfigOption = None,
) -> None:
    """Write a Triton model repository serving TEXT -> EMBEDDING for the embedding model."""
    if device not in ("gpu", "cpu"):
        raise fail(f"--device must be gpu or cpu, got {device!r}")
    settings = settings_from(config)
    folder, model_name = run(export_folder(embedding_model_config(settings)))
    try:
        repo = prepare(folder, out, name or model_name, max_batch=max_batch,
                       device="gpu" if device == "gpu" else "cpu")
    except (ValueError, OSError) as exc:
        raise fail(f"cannot write the model repository: {exc}") from None
    report(repo)


def report(repo: PreparedRepository) -> None:
    console.print(
        f"wrote {repo.root}: [bold]{repo.name}[/] (ensemble) = {repo.tokenizer} (python) "
        f"-> {repo.encoder} (onnxruntime); {repo.dimension}-d vectors, up to "
        f"{repo.max_length} tokens a text, batches of up to {repo.max_batch}",
        highlight=False, soft_wrap=True,
    )
    console.print(
        "serve it:  tritonserver --model-repository " + str(repo.root.resolve())
        + "   (the Python backend needs: pip install numpy tokenizers)\n"
        "then route embeddings to it, falling back to the embedded model:\n\n"
        f'[[backends]]\nname = "triton"\nkind = "triton"\nurl = "http://127.0.0.1:8000"\n'
        f'[backends.triton]\nmodel = "{repo.name}"\n\n'
        f'[models.embedding]\nmodel = "{repo.name}"\nbackends = ["triton", "embedded"]',
        highlight=False, soft_wrap=True, markup=False,
    )
