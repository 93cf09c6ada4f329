"""Triton Python-backend model: TEXT (BYTES [batch, 1]) -> the encoder's token tensors.

Written into `<name>-tokenizer/1/model.py` by `mimiverse triton prepare`, next to the
model's own tokenizer files and `mimiverse_tokenizer.json` (max_length, pad token, which
tensors the encoder reads). It tokenises exactly as sentence-transformers does for the
embedded model: the same tokenizer.json, truncation to the model's max_seq_length, each
request padded to its longest text (the attention mask keeps padding out of the mean).

Needs `numpy` and `tokenizers` in the Python backend's environment. The Triton utilities
are imported only inside the server, so `tokenize` runs (and is tested) anywhere.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer  # type: ignore[import-untyped]

SETTINGS_FILE = "mimiverse_tokenizer.json"
INPUT = "TEXT"


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer in `folder`, set to truncate and pad as the settings file says."""
    folder = Path(folder)
    settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(settings["max_length"]))
    tokenizer.enable_padding(pad_id=int(settings["pad_id"]), pad_token=str(settings["pad_token"]))
    return tokenizer


def output_names(folder: str | Path) -> list[str]:
    settings = json.loads((Path(folder) / SETTINGS_FILE).read_text(encoding="utf-8"))
    names: list[str] = settings["outputs"]
    return names


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """input_ids, attention_mask and token_type_ids as INT64 [len(texts), longest]."""
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def decode_texts(column: np.ndarray) -> list[str]:
    """A BYTES tensor of any shape as a flat list of strings (invalid UTF-8 replaced)."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in column.reshape(-1)]


class TritonPythonModel:
    """The Python backend's entry point: one response per request, in order."""

    def initialize(self, args: dict[str, Any]) -> None:
        folder = Path(__file__).resolve().parent
        self.tokenizer = load_tokenizer(folder)
        self.outputs = output_names(folder)
        self.pb = importlib.import_module("triton_python_backend_utils")

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            column = self.pb.get_input_tensor_by_name(request, INPUT).as_numpy()
            tensors = tokenize(self.tokenizer, decode_texts(column))
            responses.append(self.pb.InferenceResponse(
                output_tensors=[self.pb.Tensor(name, tensors[name]) for name in self.outputs]
            ))
        return responses

    def finalize(self) -> None:
        self.tokenizer = None
