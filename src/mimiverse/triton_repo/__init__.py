"""A Triton model repository for a sentence-transformers model: text in, the same unit
vectors out as the embedded backend gives.

    <out>/<name>/                  ensemble   TEXT (BYTES [1]) -> EMBEDDING (FP32 [dim])
    <out>/<name>-tokenizer/1/      python     model.py + the model's tokenizer files
    <out>/<name>-encoder/1/        onnxruntime_onnx: the transformer, then mean pooling
                                   over the attention mask and L2 normalisation, in-graph

The encoder is the ONNX export the embedded backend already makes (cached), with the
pooling and normalising that sentence-transformers does in Python added as graph nodes,
so that a GPU server needs nothing but the repository (and `tokenizers` for the Python
backend). Names of the tensors match the triton backend's defaults (TEXT / EMBEDDING).
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

INPUT = "TEXT"
OUTPUT = "EMBEDDING"
TOKEN_TENSORS = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
MODEL_PY = Path(__file__).with_name("tokenizer_model.py")
Device = Literal["gpu", "cpu"]


@dataclass(frozen=True, slots=True)
class PreparedRepository:
    root: Path
    name: str  # the ensemble: what the triton backend's `model` names
    tokenizer: str
    encoder: str
    dimension: int
    max_length: int
    max_batch: int


def prepare(export: Path, out: Path, name: str, *, max_batch: int = 64,
            device: Device = "gpu") -> PreparedRepository:
    """Write the repository for the ONNX export in `export` (a sentence-transformers folder
    with onnx/model.onnx, as SentenceTransformersBackend caches it) into `out`."""
    tokenizer, encoder = f"{name}-tokenizer", f"{name}-encoder"
    onnx_model = _pooled_encoder(export / "onnx" / "model.onnx")
    inputs = [i.name for i in onnx_model.graph.input]
    missing = [i for i in inputs if i not in TOKEN_TENSORS]
    if missing:
        raise ValueError(f"the ONNX model reads {missing}, which the tokenizer does not make")
    dimension = _output_width(onnx_model)
    max_length = _max_length(export)

    out.mkdir(parents=True, exist_ok=True)
    for model in (name, tokenizer, encoder):
        shutil.rmtree(out / model, ignore_errors=True)  # a re-run replaces, never mixes
        (out / model / "1").mkdir(parents=True)

    onnx = importlib.import_module("onnx")
    onnx.save(onnx_model, str(out / encoder / "1" / "model.onnx"))
    _write(out / encoder / "config.pbtxt", encoder_config(encoder, inputs, dimension,
                                                          max_batch, device))

    folder = out / tokenizer / "1"
    for file in TOKENIZER_FILES:
        if (export / file).is_file():
            shutil.copy2(export / file, folder / file)
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(f"{export} has no tokenizer.json (a fast tokenizer is needed)")
    pad_token, pad_id = _pad_token(export)
    _write(folder / "mimiverse_tokenizer.json", json.dumps(
        {"max_length": max_length, "pad_token": pad_token, "pad_id": pad_id,
         "outputs": inputs}, indent=2) + "\n")
    shutil.copy2(MODEL_PY, folder / "model.py")
    _write(out / tokenizer / "config.pbtxt", tokenizer_config(tokenizer, inputs, max_batch))

    _write(out / name / "config.pbtxt",
           ensemble_config(name, tokenizer, encoder, inputs, dimension, max_batch))
    return PreparedRepository(out, name, tokenizer, encoder, dimension, max_length, max_batch)


# -- config.pbtxt (protobuf text format of Triton's ModelConfig) ---------------------------


def _tensors(kind: str, specs: list[tuple[str, str, list[int]]]) -> str:
    items = ",\n".join(
        f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}'
        for n, t, d in specs
    )
    return f"{kind} [\n{items}\n]\n"


def tokenizer_config(name: str, outputs: list[str], max_batch: int) -> str:
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
        "dynamic_batching { }\n"
        + _tensors("input", [(INPUT, "TYPE_STRING", [1])])
        + _tensors("output", [(o, "TYPE_INT64", [-1]) for o in outputs])
        + "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )


def encoder_config(name: str, inputs: list[str], dimension: int, max_batch: int,
                   device: Device) -> str:
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
        # A millisecond of queueing lets concurrent requests share one GPU batch.
        "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
        + _tensors("input", [(i, "TYPE_INT64", [-1]) for i in inputs])
        + _tensors("output", [(OUTPUT, "TYPE_FP32", [dimension])])
        + f"instance_group [ {{ kind: {kind} count: 1 }} ]\n"
    )


def ensemble_config(name: str, tokenizer: str, encoder: str, tensors: list[str],
                    dimension: int, max_batch: int) -> str:
    maps = "".join(f' output_map {{ key: "{t}" value: "{t}" }}' for t in tensors)
    feeds = "".join(f' input_map {{ key: "{t}" value: "{t}" }}' for t in tensors)
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
        + _tensors("input", [(INPUT, "TYPE_STRING", [1])])
        + _tensors("output", [(OUTPUT, "TYPE_FP32", [dimension])])
        + "ensemble_scheduling {\n  step [\n"
        f'    {{ model_name: "{tokenizer}" model_version: -1'
        f' input_map {{ key: "{INPUT}" value: "{INPUT}" }}{maps} }},\n'
        f'    {{ model_name: "{encoder}" model_version: -1{feeds}'
        f' output_map {{ key: "{OUTPUT}" value: "{OUTPUT}" }} }}\n'
        "  ]\n}\n"
    )


# -- the encoder graph ---------------------------------------------------------------------


def _pooled_encoder(path: Path) -> Any:
    """The exported transformer with mean pooling and L2 normalisation appended, as
    sentence-transformers' Pooling(mean) and Normalize modules compute them."""
    onnx = importlib.import_module("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    model = onnx.load(str(path))
    graph = model.graph
    if len(graph.output) != 1 or "attention_mask" not in [i.name for i in graph.input]:
        raise ValueError(f"{path}: expected one token-embedding output and an attention_mask")
    hidden = graph.output[0].name

    def const(name: str, value: Any, dtype: int) -> str:
        graph.initializer.append(helper.make_tensor(name, dtype, [len(value)], value))
        return name

    axis1 = const("mimiverse_axis1", [1], tp.INT64)
    axis2 = const("mimiverse_axis2", [2], tp.INT64)
    tiny_count = const("mimiverse_min_count", [1e-9], tp.FLOAT)
    tiny_norm = const("mimiverse_min_norm", [1e-12], tp.FLOAT)
    node = helper.make_node
    graph.node.extend([
        node("Cast", ["attention_mask"], ["mv_mask"], to=tp.FLOAT),
        node("Unsqueeze", ["mv_mask", axis2], ["mv_mask3"]),
        node("Mul", [hidden, "mv_mask3"], ["mv_masked"]),
        node("ReduceSum", ["mv_masked", axis1], ["mv_sum"], keepdims=0),
        node("ReduceSum", ["mv_mask3", axis1], ["mv_count"], keepdims=0),
        node("Max", ["mv_count", tiny_count], ["mv_count_safe"]),
        node("Div", ["mv_sum", "mv_count_safe"], ["mv_mean"]),
        node("ReduceL2", ["mv_mean", axis1], ["mv_norm"], keepdims=1),
        node("Max", ["mv_norm", tiny_norm], ["mv_norm_safe"]),
        node("Div", ["mv_mean", "mv_norm_safe"], [OUTPUT]),
    ])
    width = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, tp.FLOAT, ["batch_size", width]))
    if max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 18:
        raise ValueError(f"{path}: opset 18 or newer is needed (ReduceL2 with axes input)")
    onnx.checker.check_model(model)
    return model


def _output_width(model: Any) -> int:
    width = int(model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value)
    if width <= 0:
        raise ValueError("the ONNX model's output width is not fixed")
    return width


def _max_length(export: Path) -> int:
    """Tokens per text, as sentence-transformers truncates: max_seq_length, else the
    tokenizer's model_max_length, never past the position embeddings."""
    length = _json(export / "sentence_bert_config.json").get("max_seq_length")
    if length is None:
        length = _json(export / "tokenizer_config.json").get("model_max_length")
    positions = _json(export / "config.json").get("max_position_embeddings")
    limits = [int(v) for v in (length, positions) if isinstance(v, int | float) and v < 10**6]
    if not limits:
        raise ValueError(f"{export} says nowhere how many tokens the model reads")
    return min(limits)


def _pad_token(export: Path) -> tuple[str, int]:
    tokenizers = importlib.import_module("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(export / "tokenizer.json"))
    token = _json(export / "tokenizer_config.json").get("pad_token") or "[PAD]"
    token = token.get("content", "[PAD]") if isinstance(token, dict) else str(token)
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the pad token {token!r} is not in the vocabulary")
    return token, int(token_id)


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
