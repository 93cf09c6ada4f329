"""A FIM plan's cache keys hold what changes its answer: the language the post-processor
ends answers by (given, or told by the path, which the key holds already)."""

from __future__ import annotations

from mimiverse.gateway import FimInput, Gateway
from tests.support.app_server import settings_for

PREFIX = "def mean(xs):\n    total = sum(xs)\n"


async def test_a_given_language_is_in_the_keys() -> None:
    gateway = Gateway(settings_for(("up", "openai", "http://127.0.0.1:9")))
    try:
        plain = gateway.planner.render(FimInput(PREFIX, path="stats.py"))
        python = gateway.planner.render(FimInput(PREFIX, path="stats.py", language="python"))
        go = gateway.planner.render(FimInput(PREFIX, path="stats.py", language="go"))
        # The same prompt, post-processed by different rules: never one cached answer.
        assert python.request.prompt == go.request.prompt == plain.request.prompt
        assert (python.language, go.language, plain.language) == ("python", "go", "python")
        assert python.key != go.key and python.params_key != go.params_key
        assert plain.key != go.key  # the path says python: go ends answers by other rules
        again = gateway.planner.render(FimInput(PREFIX, path="stats.py", language="go"))
        assert (again.key, again.params_key) == (go.key, go.params_key)
    finally:
        await gateway.aclose()
