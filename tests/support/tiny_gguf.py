"""A tiny random-weight llama GGUF with a Qwen2.5-Coder-like vocabulary, written in ms.

The model is nonsense, but llama.cpp loads and runs it like a real one, so tests can
exercise tokenization (FIM and chat control tokens), sampling, streaming and stops.

Determinism: the output-projection rows of every token that is not printable ASCII
(control bytes, bytes >= 0x80, the special tokens) are zero, so their logits are 0,
while the printable rows come in (r, -r) pairs, so the best of them is > 0: greedy
decoding always picks a printable token, so the text is plain ASCII. EOS is deliberately
unreachable too: generation always runs until `max_tokens` or a stop string, which makes
token counts exact and lets cancellation be tested on a stream that would otherwise go
on. Pass `max_tokens` in every request.

`script={"a": "b", ...}` writes a model whose layers are all zero, so each next token
depends only on the last one: after token `a` it answers `b` (any token, special ones
included), and otherwise as above. Tests use it to make a model say a special token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# Real Qwen2.5-Coder strings, in their real relative order (ids differ: ours are small).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# A few merges so the BPE path is exercised; llama.cpp refuses a gpt2 vocab without them
# (and gguf drops an empty array silently, so "no merges" means a broken file).
_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "Ġ"),
    ("ĠĠ", "ĠĠ"),
    ("r", "e"),
    ("t", "u"),
    ("r", "n"),
    ("d", "e"),
    ("i", "n"),
)

# Qwen's ChatML, trimmed to what the tests need (no tools); '\n' is a Jinja escape.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 2048

_FILE_TYPES = {
    gguf.GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}


@dataclass(frozen=True, slots=True)
class TinyModelInfo:
    path: Path
    n_vocab: int
    n_ctx_train: int
    token_ids: dict[str, int]  # special token string -> id
    bos_id: int
    eos_id: int
    fim_prefix_id: int
    fim_suffix_id: int
    fim_middle_id: int
    printable_ids: frozenset[int]  # the only ids greedy decoding can produce


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map that byte-level BPE vocabs use."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def _vocabulary() -> tuple[list[str], list[int], set[int]]:
    """Tokens, their types, and the ids that decode to printable ASCII."""
    byte_char = bytes_to_unicode()
    tokens = [byte_char[b] for b in range(256)]
    types = [int(gguf.TokenType.NORMAL)] * 256
    printable = {b for b in range(256) if 0x20 <= b <= 0x7E}
    char_byte = {c: b for b, c in byte_char.items()}
    for left, right in _MERGES:
        merged = left + right
        tokens.append(merged)
        types.append(int(gguf.TokenType.NORMAL))
        if all(0x20 <= char_byte[c] <= 0x7E for c in merged):
            printable.add(len(tokens) - 1)
    for special in SPECIAL_TOKENS:
        tokens.append(special)
        types.append(int(gguf.TokenType.CONTROL))
    return tokens, types, printable


def write_tiny_gguf(
    path: Path, *, seed: int = 0, embedding: bool = False, script: dict[str, str] | None = None,
    quant: gguf.GGMLQuantizationType | None = None,
) -> TinyModelInfo:
    """Write the model to `path` and describe it. Same seed, same bytes.

    `embedding=True` also records mean pooling, so llama.cpp's embedding mode returns one
    vector per input instead of one per token. `quant` (Q4_0, Q8_0, ...) quantizes the
    layers' matrices with gguf's own quantizer, as real GGUFs are: llama.cpp then runs
    its quantized kernels (repacked weights, AMX on CPUs that have it). The embedding and
    output matrices stay f16, so greedy output stays printable ASCII.
    """
    tokens, types, printable = _vocabulary()
    n_vocab = len(tokens)
    ids = {t: i for i, t in enumerate(tokens) if types[i] == int(gguf.TokenType.CONTROL)}
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # f16 halves the file; llama.cpp's CPU kernels take f16 weights directly.
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float16)

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-embed" if embedding else "tiny-coder")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(_FILE_TYPES[quant] if quant is not None else gguf.LlamaFileType.MOSTLY_F16)
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in _MERGES])
    writer.add_bos_token_id(ids["<|endoftext|>"])
    writer.add_eos_token_id(ids["<|endoftext|>"])
    writer.add_pad_token_id(ids["<|endoftext|>"])
    writer.add_add_bos_token(False)  # Qwen prompts start without BOS
    writer.add_add_space_prefix(False)  # else " " is glued before the first FIM token
    writer.add_chat_template(CHAT_TEMPLATE)

    embeddings = matrix(n_vocab, N_EMBD)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = matrix(n_vocab, N_EMBD)
    # Printable rows come in (r, -r) pairs, so the best printable logit is |r.h| > 0 for
    # any hidden state h; every other row is zero, so its logit 0 can never win greedy.
    ordered = sorted(printable)
    output[ordered[1::2]] = -output[ordered[0::2][: len(ordered) // 2]]
    output[[i for i in range(n_vocab) if i not in printable]] = 0
    index = {t: i for i, t in enumerate(tokens)}
    for before, after in (script or {}).items():
        # Zero layers leave the last token's embedding as the hidden state: a row along
        # it, much longer than the random ones, wins after that token and only there.
        e = embeddings[index[before]].astype(np.float32)
        output[index[after]] = (8.0 * e / np.linalg.norm(e)).astype(np.float16)
    writer.add_tensor("output.weight", output)
    weights = matrix if script is None else (lambda r, c: np.zeros((r, c), np.float16))

    def add_weights(name: str, rows: int, cols: int) -> None:
        data = weights(rows, cols)
        if quant is None:
            writer.add_tensor(name, data)
        else:
            packed = gguf.quants.quantize(data.astype(np.float32), quant)
            writer.add_tensor(name, packed, raw_dtype=quant)

    for layer in range(N_LAYER):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            add_weights(f"{blk}.{name}.weight", N_EMBD, N_EMBD)
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        add_weights(f"{blk}.ffn_gate.weight", N_FF, N_EMBD)
        add_weights(f"{blk}.ffn_up.weight", N_FF, N_EMBD)
        add_weights(f"{blk}.ffn_down.weight", N_EMBD, N_FF)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    return TinyModelInfo(
        path=path,
        n_vocab=n_vocab,
        n_ctx_train=N_CTX_TRAIN,
        token_ids=ids,
        bos_id=ids["<|endoftext|>"],
        eos_id=ids["<|endoftext|>"],
        fim_prefix_id=ids["<|fim_prefix|>"],
        fim_suffix_id=ids["<|fim_suffix|>"],
        fim_middle_id=ids["<|fim_middle|>"],
        printable_ids=frozenset(printable),
    )
