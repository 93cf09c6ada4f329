"""The `-int8` variant's recipe: SmoothQuant, then dynamic int8 with per-channel weights.

SmoothQuant moves per-channel activation peaks, measured on a few built-in snippets, into
the weights; onnxruntime's dynamic quantisation then scales each MatMul input per run.
About 1.6x the fp32 throughput on 2 cores; cosine to the fp32 vectors 0.996 on average
over code chunks (>= 0.99 for all but ~1 in 500), and the same search quality (MRR@10)
on the project's evaluation. numpy, onnx and onnxruntime are imported on use.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mimiverse.backends.sentence_transformers.model import CPU_PROVIDER

# Part of the int8 cache key: change it whenever the recipe below changes what it writes.
INT8_RECIPE = "smoothquant-0.7+dynamic-qint8-per-channel/1"
# How much of each activation channel's range moves into the weights. 0.7 measured best
# on code (0.5 leaves the GELU outputs too wide for one int8 scale; 0.9 overloads weights).
_SMOOTH_ALPHA = 0.7
# Calibration for SmoothQuant: code and queries of the kind the index embeds. Fixed here,
# so that every machine builds the same int8 model from the same weights.
_CALIBRATION = (
    "def add(a, b):\n    return a + b",
    "import os\nimport sys\nfrom pathlib import Path\n\nROOT = Path(__file__).resolve().parent",
    "class LRUCache:\n    def __init__(self, capacity: int) -> None:\n"
    "        self.capacity = capacity\n        self.items: dict[str, bytes] = {}\n\n"
    "    def get(self, key: str) -> bytes | None:\n        value = self.items.pop(key, None)\n"
    "        if value is not None:\n            self.items[key] = value\n        return value",
    "async function fetchJson(url) {\n"
    "  const response = await fetch(url, { headers: { Accept: 'application/json' } });\n"
    "  if (!response.ok) throw new Error(`HTTP ${response.status}`);\n"
    "  return response.json();\n}",
    "SELECT u.id, u.name, count(o.id) AS orders\n"
    "FROM users u LEFT JOIN orders o ON o.user_id = u.id\n"
    "WHERE u.created_at > now() - interval '30 days'\n"
    "GROUP BY u.id, u.name ORDER BY orders DESC LIMIT 20;",
    "fn parse_line(line: &str) -> Result<(String, u32), ParseError> {\n"
    "    let mut parts = line.splitn(2, '=');\n"
    "    let key = parts.next().ok_or(ParseError::Empty)?.trim().to_string();\n"
    "    let value = parts.next().ok_or(ParseError::NoValue)?.trim().parse()?;\n"
    "    Ok((key, value))\n}",
    "func (s *Server) handle(w http.ResponseWriter, r *http.Request) {\n"
    "\tctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)\n\tdefer cancel()\n"
    "\tif err := s.store.Ping(ctx); err != nil {\n"
    "\t\thttp.Error(w, err.Error(), http.StatusServiceUnavailable)\n\t\treturn\n\t}\n"
    "\tw.WriteHeader(http.StatusNoContent)\n}",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n"
    "    for (int i = 1; i < argc; i++) {\n        printf(\"%d: %s\\n\", i, argv[i]);\n"
    "    }\n    return 0;\n}",
    "    @pytest.mark.parametrize(\"size\", [0, 1, 1024])\n"
    "    def test_round_trip(self, tmp_path, size):\n        data = os.urandom(size)\n"
    "        path = tmp_path / \"blob.bin\"\n        path.write_bytes(data)\n"
    "        assert path.read_bytes() == data",
    "# Configuration\n\nSet `MIMIVERSE_PORT` to change the port. The server reads "
    "`config.toml` from the\ncurrent directory, then from `~/.config/mimiverse/`.",
    "how do I read a file line by line",
    "retry a failed HTTP request with exponential backoff",
    "x",
    "<div class=\"card\">\n  <h2>{{ title }}</h2>\n"
    "  <button onclick=\"save()\">Save</button>\n</div>",
    "for i in range(len(matrix)):\n    for j in range(len(matrix[i])):\n"
    "        if matrix[i][j] < 0:\n            matrix[i][j] = 0\n"
    "        total += matrix[i][j] ** 2\nprint(f\"norm = {total ** 0.5:.3f}\")",
    "public static <T extends Comparable<T>> void sort(List<T> items) {\n"
    "    Collections.sort(items, Comparator.naturalOrder());\n}",
)


def quantize_int8(source: Path, target: Path, tokenizer_folder: Path) -> None:
    """SmoothQuant, then dynamic int8, of the fp32 ONNX model `source` into `target`.

    Dynamic quantisation gives each MatMul input one int8 scale per run; a few activation
    channels (after GELU, mostly) are 10-50x wider than the rest and would flatten the
    others to a handful of levels. Dividing each input channel by s and multiplying the
    matching weight row by s leaves the product unchanged and the ranges even.
    """
    onnx = importlib.import_module("onnx")
    quantization = importlib.import_module("onnxruntime.quantization")
    model = onnx.load(str(source))
    groups = _smoothable(model)
    peaks = _activation_peaks(model, list(groups), tokenizer_folder)
    _smooth(model, groups, peaks, _SMOOTH_ALPHA)
    # The quantiser logs a line per tensor, at INFO, on the root logger.
    with _root_records_dropped(f"{os.sep}onnxruntime{os.sep}quantization{os.sep}"):
        quantization.quantize_dynamic(
            model, str(target), weight_type=quantization.QuantType.QInt8, per_channel=True
        )


def _smoothable(model: Any) -> dict[str, list[int]]:
    """MatMuls with a 2-D fp32 weight of their own, by input: positions in the node list."""
    onnx = importlib.import_module("onnx")
    weights = {t.name: t for t in model.graph.initializer}
    uses = collections.Counter(name for node in model.graph.node for name in node.input)
    groups: dict[str, list[int]] = {}
    for position, node in enumerate(model.graph.node):
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        activation, weight = node.input
        tensor = weights.get(weight)
        if (activation in weights or tensor is None or uses[weight] != 1
                or len(tensor.dims) != 2 or tensor.data_type != onnx.TensorProto.FLOAT):
            continue
        groups.setdefault(activation, []).append(position)
    return groups


def _activation_peaks(model: Any, names: list[str], tokenizer_folder: Path) -> dict[str, Any]:
    """Per-channel max |x| of each named tensor over the calibration texts, run one by
    one (no padding rows to skew them)."""
    np = importlib.import_module("numpy")
    onnx = importlib.import_module("onnx")
    ort = importlib.import_module("onnxruntime")
    transformers = importlib.import_module("transformers")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names
    )
    options = ort.SessionOptions()
    # Fusions could swallow the tensors asked for; this session runs only a few texts.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=[CPU_PROVIDER])
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(tokenizer_folder), local_files_only=True
    )
    wanted = {i.name for i in session.get_inputs()}
    peaks: dict[str, Any] = {}
    for text in _CALIBRATION:
        encoded = tokenizer(text, return_tensors="np", truncation=True, max_length=256)
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in wanted}
        if "token_type_ids" in wanted and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        if wanted - feeds.keys():
            raise RuntimeError(f"cannot feed the model's inputs {sorted(wanted - feeds.keys())}")
        for name, value in zip(names, session.run(names, feeds), strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def _smooth(model: Any, groups: dict[str, list[int]], peaks: dict[str, Any],
            alpha: float) -> None:
    """Rescale each group's input channels by 1/s (a Mul node) and weight rows by s."""
    np = importlib.import_module("numpy")
    onnx = importlib.import_module("onnx")
    to_array, from_array = onnx.numpy_helper.to_array, onnx.numpy_helper.from_array
    weights = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)
    before: dict[int, list[Any]] = {}  # node position -> Mul nodes to insert before it
    for index, (activation, positions) in enumerate(groups.items()):
        users = [nodes[p] for p in positions]
        arrays = [to_array(weights[u.input[1]]) for u in users]
        weight_peak = np.max([np.abs(a).max(axis=1) for a in arrays], axis=0)
        act_peak = peaks[activation]
        usable = (act_peak > 0) & (weight_peak > 0)
        scale = np.ones_like(act_peak, dtype=np.float32)
        scale[usable] = act_peak[usable] ** alpha / weight_peak[usable] ** (1 - alpha)
        for user, array in zip(users, arrays, strict=True):
            rescaled = (array * scale[:, None]).astype(np.float32)
            weights[user.input[1]].CopyFrom(from_array(rescaled, user.input[1]))
        inverse = f"mimiverse_smooth_{index}"
        model.graph.initializer.append(from_array((1 / scale).astype(np.float32), inverse))
        mul = onnx.helper.make_node("Mul", [activation, inverse], [f"{inverse}_out"],
                                    name=f"{inverse}_mul")
        for user in users:
            user.input[0] = f"{inverse}_out"
        before.setdefault(min(positions), []).append(mul)
    ordered = [n for p, node in enumerate(nodes) for n in (*before.get(p, ()), node)]
    del model.graph.node[:]
    model.graph.node.extend(ordered)


class _DropFrom(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.pathname


@contextlib.contextmanager
def _root_records_dropped(path_fragment: str) -> Iterator[None]:
    """Drop records logged straight on the root logger from files under `path_fragment`
    (a filter, not a level: other threads' records still pass)."""
    root = logging.getLogger()
    dropping = _DropFrom(path_fragment)
    root.addFilter(dropping)
    try:
        yield
    finally:
        root.removeFilter(dropping)

