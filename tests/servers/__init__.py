"""Protocol-faithful loopback servers (Ollama, OpenAI-compatible) for tests and benchmarks.

Deterministic answers, and a `Behaviour` a test mutates to make them fail, reject, hang,
stall, die or send garbage. See `harness` for running them in a thread or a process.
"""
