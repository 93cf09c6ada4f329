"""Choosing repository context: the query, the visible-window filter, the budget."""

from __future__ import annotations

from mimiverse.fim.context import (
    Cursor,
    clip_to_lines,
    cursor_identifiers,
    cursor_query,
    overlaps_visible,
    select,
    shared_identifiers,
)
from mimiverse.fim.prompt import conservative_tokens
from mimiverse.fim.templates import TEMPLATES, ContextFile

QWEN = TEMPLATES["qwen2.5-coder"]


def test_query_is_the_current_line_then_identifiers_nearest_first() -> None:
    prefix = (
        "import os\n"
        "def load_config(path):\n"
        "    with open(path) as handle:\n"
        "        raw = handle.read()\n"
        "    return parse_toml(raw"
    )
    suffix = ")\n\ndef save_config(path, data):\n    pass\n"
    identifiers = cursor_identifiers(prefix, suffix)
    assert identifiers == ["parse_toml", "raw", "handle", "read", "open", "path",
                           "load_config", "save_config"]  # 8 at most
    assert cursor_query(prefix, suffix, identifiers[:3]) == (
        "return parse_toml(raw) parse_toml raw handle"
    )


def test_identifiers_come_only_from_near_the_cursor() -> None:
    prefix = "far_away_name = 1\n" + "x = 1\n" * 20 + "value = compute_"
    assert cursor_identifiers(prefix, "", before_lines=12) == ["value", "compute_"]


def test_identifiers_are_capped() -> None:
    prefix = " ".join(f"name{i:02d}" for i in range(40)) + "\n"
    assert len(cursor_identifiers(prefix, "", max_identifiers=5)) == 5


def test_shared_identifiers_counts_whole_names() -> None:
    text = "def compute_vat(amount, rate_name):\n    return amount * RATES[rate_name]\n"
    assert shared_identifiers(text, ["compute_vat", "rate_name", "rate", "net"]) == 2


CURSOR = Cursor(path="app/main.py", line=40, first_visible=20, last_visible=60,
                visible_text="def helper():\n    return 1\n")


def test_chunks_the_prompt_already_shows_are_dropped() -> None:
    assert overlaps_visible(CURSOR, "app/main.py", 55, 70, "anything")
    assert overlaps_visible(CURSOR, "app/main.py", 1, 20, "anything")
    assert not overlaps_visible(CURSOR, "app/main.py", 1, 19, "def other(): pass")
    assert not overlaps_visible(CURSOR, "app/other.py", 30, 50, "def other(): pass")
    # The same code under another path (a copy, or a client window): shown already.
    assert overlaps_visible(CURSOR, "lib/copy.py", 1, 2, "def helper():\n    return 1")


def _files(*items: tuple[str, str]) -> list[ContextFile]:
    return [ContextFile(p, t) for p, t in items]


def test_select_keeps_order_and_stays_within_the_budget() -> None:
    candidates = _files(("a.py", "alpha = 1"), ("b.py", "beta = 2" * 50), ("c.py", "gamma = 3"))
    chosen, used = select(candidates, budget=30, count=conservative_tokens,
                          block=QWEN.context_block, max_per_file=2, max_items=10, overhead=4)
    # b.py does not fit; c.py, after it, still does.
    assert [c.path for c in chosen] == ["a.py", "c.py"]
    assert used == 4 + sum(conservative_tokens(QWEN.context_block(c)) for c in chosen)
    assert used <= 30


def test_select_drops_duplicates_and_caps_per_file() -> None:
    candidates = _files(
        ("a.py", "def f():\n    return 1\n"), ("a.py", "def g(): pass"),
        ("a.py", "def h(): pass"), ("b.py", "def f():\n    return 1\n"),
        ("c.py", "x = 1\ny = 2\n"), ("c.py", "y = 2"), ("d.py", "   \n"),
    )
    chosen, _ = select(candidates, budget=1000, count=len, block=QWEN.context_block,
                       max_per_file=2, max_items=10)
    assert [(c.path, c.text) for c in chosen] == [
        ("a.py", "def f():\n    return 1\n"), ("a.py", "def g(): pass"),
        ("c.py", "x = 1\ny = 2\n"),
    ]


def test_select_stops_at_max_items_and_costs_nothing_when_empty() -> None:
    candidates = _files(*((f"{i}.py", f"v{i} = {i}") for i in range(10)))
    chosen, _ = select(candidates, budget=1000, count=len, block=QWEN.context_block,
                       max_per_file=1, max_items=3)
    assert len(chosen) == 3
    assert select([], budget=10, count=len, block=QWEN.context_block, max_per_file=1,
                  max_items=3, overhead=5) == ([], 0)


def test_clip_keeps_whole_lines() -> None:
    assert clip_to_lines("one\ntwo\nthree\n", 100) == "one\ntwo\nthree\n"
    assert clip_to_lines("one\ntwo\nthree\n", 9) == "one\ntwo\n"
    assert clip_to_lines("a-very-long-single-line", 5) == ""


def test_blocks_are_what_the_template_renders() -> None:
    item = ContextFile("lib/util.py", "def f():\n    pass")
    for template in TEMPLATES.values():
        rendered = template.render("x = ", "", path="main.py", context=[item])
        assert template.context_block(item) in rendered
