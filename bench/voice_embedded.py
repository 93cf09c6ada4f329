"""What the embedded Whisper path costs around the model: decoding the upload and resampling
it to 16 kHz (soundfile + scipy), then Whisper's log-mel features, per recording; and one
generate() of the tests' tiny random-weight model, to show the share (a real model's
generate() costs far more: only decoding and features carry over).

espeak-ng speech (22.05 kHz WAV), repeated to the lengths asked for; CPU seconds, medians.

    python bench/voice_embedded.py [--seconds 2 30 120] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for the tiny model
import benchlib as bl

bl.ensure_venv()

SAID = "where is the cart total computed"


def cpu_median(work: Callable[[], object], runs: int) -> float:
    taken = []
    for _ in range(runs):
        started = time.process_time()
        work()
        taken.append(time.process_time() - started)
    return statistics.median(taken)


def main() -> None:
    import io

    import numpy as np
    import soundfile
    import torch
    from tests.voice.tiny_whisper import make_tiny_whisper

    from mimiverse.backends.whisper import SAMPLE_RATE, decode_audio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[2.0, 30.0, 120.0])
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "said.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), SAID], check=True, timeout=60)
        speech, rate = soundfile.read(wav, dtype="int16")
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        folder = make_tiny_whisper(Path(tmp) / "tiny")
        processor = WhisperProcessor.from_pretrained(folder, local_files_only=True)
        model = WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        print(f"{'audio s':>8} {'decode+resample ms':>19} {'features ms':>12} "
              f"{'tiny generate ms':>17} {'decode share':>13}")
        for seconds in opts.seconds:
            samples = np.resize(speech, int(seconds * rate))
            buffer = io.BytesIO()
            soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
            audio = buffer.getvalue()
            decoded = decode_audio(audio, "said.wav", "audio/wav")
            window = decoded[:SAMPLE_RATE * 30]
            features = processor(window, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                 return_attention_mask=True)
            windows = -(-len(decoded) // (SAMPLE_RATE * 30))
            decode = cpu_median(lambda a=audio: decode_audio(a, "said.wav", "audio/wav"),
                                opts.runs)
            feats = windows * cpu_median(
                lambda w=window: processor(w, sampling_rate=SAMPLE_RATE, return_tensors="pt"),
                opts.runs)

            def generate(f: object = features) -> object:
                with torch.inference_mode():
                    return model.generate(f.input_features,  # type: ignore[attr-defined]
                                          attention_mask=f.attention_mask,  # type: ignore[attr-defined]
                                          language="en", task="transcribe")

            gen = windows * cpu_median(generate, opts.runs)
            print(f"{seconds:8.0f} {decode * 1000:19.1f} {feats * 1000:12.1f} "
                  f"{gen * 1000:17.1f} {decode / (decode + feats + gen):13.1%}")


if __name__ == "__main__":
    main()
