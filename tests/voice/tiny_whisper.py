"""A tiny Whisper model with random weights, made offline, saved as transformers saves one.

No Whisper weights or tokenizer can be downloaded here, so the tokenizer is built from a
vocabulary written below: byte-level BPE with no merges over the lower-case letters, the
space and the apostrophe, plus Whisper's special tokens. Generation suppresses the special
tokens a model would learn not to emit mid-text, so the random weights spell letters until
`max_length`: deterministic nonsense, which exercises the whole pipeline (decoding,
resampling, features, encoder, decoder, generation options, detokenising) but says nothing
about recognition quality.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

EOT = "<|endoftext|>"
LANGUAGES = ("en", "de")
SPECIALS = (EOT, "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES),
            "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
            "<|nocaptions|>", "<|notimestamps|>")
MAX_TOKENS = 40  # per 30 s window, prompt and forced prefix included
TEXT = frozenset(string.ascii_lowercase + " '")


def make_tiny_whisper(folder: Path, seed: int = 0, multilingual: bool = True) -> Path:
    """The model in `folder`; not `multilingual`: English-only, as `openai/whisper-*.en`
    (no language tokens in its generation config)."""
    # "Ġ" is how byte-level BPE writes the space byte.
    letters = [*string.ascii_lowercase, "Ġ", "'"]
    vocab = {token: i for i, token in enumerate([*letters, *SPECIALS])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                 unk_token=EOT, bos_token=EOT, eos_token=EOT, pad_token=EOT)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)

    eot, start = vocab[EOT], vocab["<|startoftranscript|>"]
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, d_model=32, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
        max_target_positions=64, decoder_start_token_id=start, eos_token_id=eot,
        pad_token_id=eot, bos_token_id=eot))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        max_length=MAX_TOKENS, is_multilingual=multilingual,
        **({"lang_to_id": {f"<|{code}|>": vocab[f"<|{code}|>"] for code in LANGUAGES},
            "task_to_id": {"transcribe": vocab["<|transcribe|>"],
                           "translate": vocab["<|translate|>"]}} if multilingual else {}),
        no_timestamps_token_id=vocab["<|notimestamps|>"],
        suppress_tokens=[vocab[s] for s in SPECIALS[1:]], begin_suppress_tokens=[eot])
    model.save_pretrained(folder)
    return folder
