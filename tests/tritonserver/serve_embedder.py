"""A real Triton Inference Server (pytriton's bundled tritonserver) serving embeddings.

Runs in the pytriton venv (`.venv-triton`, numpy < 2), started by the tests' fixture:

    .venv-triton/bin/python tests/tritonserver/serve_embedder.py \
        --http-port P --grpc-port G --metrics-port M [--model bow --max-batch 16]
        [--calls-log FILE] [--repo DIR --repo-model NAME]

Model `--model` (TEXT BYTES [batch, 1] -> EMBEDDING FP32 [batch, 64]) is the hashed bag
of words in bow.py, so the tests know each vector exactly; `<model>-flat` is the same
without Triton's batching (TEXT [n] -> [n, 64], max_batch_size 0). Every batch either
executes is appended to `--calls-log` as its size, one line each. With `--repo`, model
`--repo-model` serves what `mimiverse triton prepare` wrote there, the way a GPU
tritonserver would run it: the repository's own tokenizer model.py, then its ONNX encoder
on onnxruntime.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import sysconfig
from pathlib import Path
from typing import Any

# The Python backend must load this interpreter's libpython, not another one on the
# system; it is found through LD_LIBRARY_PATH, which only takes effect at exec time.
_LIBDIR = sysconfig.get_config_var("LIBDIR") or ""
if _LIBDIR and _LIBDIR not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (_LIBDIR, os.environ.get("LD_LIBRARY_PATH")) if p)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bow import DIM, bow_vector  # noqa: E402


def _texts(column: np.ndarray) -> list[str]:
    return [bytes(v).decode("utf-8") for v in column.reshape(-1)]


def bow_model(calls_log: Path | None) -> Any:
    @batch  # type: ignore[misc]
    def infer(TEXT: np.ndarray) -> dict[str, np.ndarray]:
        texts = _texts(TEXT)
        if calls_log is not None:
            with open(calls_log, "a", encoding="ascii") as f:
                f.write(f"{len(texts)}\n")
        return {"EMBEDDING": np.stack([bow_vector(t) for t in texts]).astype(np.float32)}

    return infer


def flat_bow_model(calls_log: Path | None) -> Any:
    """The same embedding without Triton's batching: TEXT is [n], EMBEDDING [n, 64]."""

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        answers = []
        for request in requests:
            texts = _texts(request["TEXT"])
            if calls_log is not None:
                with open(calls_log, "a", encoding="ascii") as f:
                    f.write(f"{len(texts)}\n")
            answers.append({"EMBEDDING": np.stack([bow_vector(t) for t in texts])})
        return answers

    return infer


def repo_model(repo: Path, name: str) -> Any:
    """The prepared ensemble, step by step: tokenizer model.py, then the ONNX encoder."""
    import onnxruntime as ort

    tokenizer_dir = repo / f"{name}-tokenizer" / "1"
    spec = importlib.util.spec_from_file_location("prepared_tokenizer", tokenizer_dir / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = module.load_tokenizer(tokenizer_dir)
    session = ort.InferenceSession(str(repo / f"{name}-encoder" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    @batch  # type: ignore[misc]
    def infer(TEXT: np.ndarray) -> dict[str, np.ndarray]:
        feeds = module.tokenize(tokenizer, _texts(TEXT))
        (vectors,) = session.run(["EMBEDDING"], {k: v for k, v in feeds.items() if k in wanted})
        return {"EMBEDDING": vectors.astype(np.float32)}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--model", default="bow")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--calls-log", type=Path)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--repo-model")
    parser.add_argument("--repo-dim", type=int, default=384)
    args = parser.parse_args()

    config = TritonConfig(
        http_address="127.0.0.1", http_port=args.http_port,
        grpc_address="127.0.0.1", grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, allow_gpu_metrics=False, exit_timeout_secs=1,
    )
    # SIGTERM ends serve() the way Ctrl-C does, so stop() runs and cleans its workspace.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Triton(config=config) as triton:
        text_in = [Tensor(name="TEXT", dtype=bytes, shape=(1,))]
        triton.bind(
            model_name=args.model, infer_func=bow_model(args.calls_log), inputs=text_in,
            outputs=[Tensor(name="EMBEDDING", dtype=np.float32, shape=(DIM,))],
            config=ModelConfig(max_batch_size=args.max_batch),
        )
        triton.bind(
            model_name=f"{args.model}-flat", infer_func=flat_bow_model(args.calls_log),
            inputs=[Tensor(name="TEXT", dtype=bytes, shape=(-1,))],
            outputs=[Tensor(name="EMBEDDING", dtype=np.float32, shape=(-1, DIM))],
            config=ModelConfig(batching=False),
        )
        if args.repo is not None:
            triton.bind(
                model_name=args.repo_model, infer_func=repo_model(args.repo, args.repo_model),
                inputs=text_in,
                outputs=[Tensor(name="EMBEDDING", dtype=np.float32, shape=(args.repo_dim,))],
                config=ModelConfig(max_batch_size=args.max_batch),
            )
        triton.serve()


if __name__ == "__main__":
    main()
