"""The `mimiverse.toml` the scale tests serve: one OpenAI-compatible upstream behind every
model, the cache in Redis; `extra` adds sections (the replicas' shared index store)."""

from __future__ import annotations

from pathlib import Path


def write_config(path: Path, upstream: str, redis: str, extra: str = "") -> Path:
    path.write_text(f"""
[server]
access_log = false

[cache]
kind = "redis"
url = "{redis}"
{extra}
[[backends]]
name = "vllm"
kind = "openai"
url = "{upstream}"

[models.completion]
model = "test-model"
family = "qwen2.5-coder"
backends = ["vllm"]

[models.chat]
model = "test-model"
backends = ["vllm"]

[models.embedding]
model = "test-embed"
backends = ["vllm"]
""")
    return path
