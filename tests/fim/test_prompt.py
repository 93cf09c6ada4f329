from __future__ import annotations

import pytest

from mimiverse.fim.prompt import PREFIX_STEP_LINES, estimate_tokens, trim_to_budget


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcdefg", 2),  # 7 bytes = exactly 2 tokens of 3.5
        ("abcdefgh", 3),
        ("x" * 35, 10),
        ("é", 1),  # 2 bytes
        ("日本語", 3),  # 9 bytes: non-ASCII text costs more per character
        ("\ud800", 1),  # a lone surrogate must not raise
    ],
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_estimate_tokens_on_large_inputs_is_utf8_bytes_over_3_5() -> None:
    ascii_text = "for (int i = 0; i < n; i++) { total += values[i]; }\n" * 2000  # ~100 KB
    other = "変数 = 値  # コメント\n" * 5000
    # A formula over the byte length, nothing per character (its speed is bench material).
    assert estimate_tokens(ascii_text) == -(-2 * len(ascii_text.encode()) // 7)
    assert estimate_tokens(other) == -(-2 * len(other.encode()) // 7)  # ceil(bytes / 3.5)


def chars(text: str) -> int:
    """One token per character keeps the expected outputs easy to check by hand."""
    return len(text)


@pytest.mark.parametrize(
    ("prefix", "suffix", "budget", "share", "expected"),
    [
        # Fits: unchanged.
        ("ab\ncd", "ef\n", 8, 0.75, ("ab\ncd", "ef\n")),
        # Whole lines drop from the far end of the prefix; the cursor's line stays.
        ("l1\nl2\nl3\ncur", "", 9, 0.75, ("l2\nl3\ncur", "")),
        # Whole lines drop from the far end of the suffix.
        ("", "rest\nn1\nn2\nn3\n", 10, 0.75, ("", "rest\nn1\n")),
        # A short suffix gives the unused part of its share to the prefix (8, not 5).
        ("1\n22\n333\n4444", "ab", 10, 0.5, ("333\n4444", "ab")),
        # A short prefix gives the unused part of its share to the suffix (9, not 5).
        ("p", "s1\ns2\ns3\ns4\n", 10, 0.5, ("p", "s1\ns2\ns3\n")),
        # Both too long: prefix gets 15, keeps 9 (whole lines); the suffix gets 20 - 9.
        (
            "xxxxxxxxxx\nyyyyy\ncur",
            "s1\ns2\ns3\ns4\ns5\n",
            20,
            0.75,
            ("yyyyy\ncur", "s1\ns2\ns3\n"),
        ),
        # A cursor line longer than the whole share is cut inside, keeping its end.
        ("head\n0123456789", "", 4, 1.0, ("6789", "")),
        # Same for the suffix's first line, keeping its start.
        ("", "0123456789\ntail", 4, 0.75, ("", "0123")),
        # Only blank lines fit next to the cursor: cut inside the next line.
        ("0123456789\n\n", "", 4, 1.0, ("89\n\n", "")),
        # No budget: nothing.
        ("abc", "def", 0, 0.75, ("", "")),
    ],
)
def test_trim_to_budget(
    prefix: str, suffix: str, budget: int, share: float, expected: tuple[str, str]
) -> None:
    assert trim_to_budget(prefix, suffix, budget, prefix_share=share, count=chars) == expected


def test_inputs_that_fit_come_back_as_the_same_objects() -> None:
    prefix, suffix = "def f():\n    ", "\n    return 1\n"
    kept_prefix, kept_suffix = trim_to_budget(prefix, suffix, 2048)
    assert kept_prefix is prefix
    assert kept_suffix is suffix


class CountingCounter:
    def __init__(self) -> None:
        self.chars = 0

    def __call__(self, text: str) -> int:
        self.chars += len(text)
        return estimate_tokens(text)


def test_multi_megabyte_lines_are_trimmed_without_recounting() -> None:
    line = "abc = def(ghi)\n"  # 15 bytes = 5 estimated tokens
    text = line * 300_000  # 4.5 MB each side
    counter = CountingCounter()
    prefix, suffix = trim_to_budget(text, text, 2048, count=counter)
    # Prefix share 1536 -> 307 whole lines, from line 299,693: snapped to line 299,696 (a
    # multiple of 8), 304 lines (1520); the suffix gets 2048 - 1520 = 528 -> 105 lines.
    assert prefix == line * 304
    assert suffix == line * 105
    # Each side is counted once in full, then only what is kept (plus the line that
    # did not fit, and the lines the snap drops): re-counting per dropped line would be
    # quadratic.
    assert counter.chars <= (2 * len(text) + len(prefix) + len(suffix)
                             + (2 + PREFIX_STEP_LINES) * len(line))


def test_a_giant_single_line_is_cut_inside() -> None:
    text = "y" * 5_000_000
    counter = CountingCounter()
    prefix, suffix = trim_to_budget(text, text, 2048, count=counter)
    # ceil(2n / 7) <= 1536 -> n = 5376; the suffix then gets 512 -> n = 1792.
    assert prefix == "y" * 5376
    assert suffix == "y" * 1792
    # The search inside the line looks at a window bounded by the budget, not the line.
    assert counter.chars < 2 * len(text) + 2_000_000


def test_non_ascii_costs_more_per_character() -> None:
    prefix = "x = 1\n" + "s = '日本語'\n" * 10
    kept, _ = trim_to_budget(prefix, "", 20)
    # Each Japanese line is 17 bytes = 5 tokens: 4 lines (from line 7) fit in 20; the
    # start snaps to line 8.
    assert kept == "s = '日本語'\n" * 3


def test_typing_keeps_the_start_of_a_trimmed_prefix() -> None:
    """Consecutive prompts share their beginning (an engine's prompt cache reuses it)
    until the prefix has grown by PREFIX_STEP_LINES lines."""
    file = "".join(f"value_{i} = compute({i})\n" for i in range(400)) + "result = "
    starts = set()
    typed = ""
    for ch in "total_of_values(values)\nprint(result)\n":
        typed += ch
        kept, _ = trim_to_budget(file + typed, "", 1024)
        starts.add(len(file + typed) - len(kept))
    assert len(starts) == 1
    first_line = file.count("\n", 0, starts.pop())
    assert first_line % PREFIX_STEP_LINES == 0


@pytest.mark.parametrize(("budget", "share"), [(-1, 0.75), (100, -0.1), (100, 1.5)])
def test_invalid_arguments(budget: int, share: float) -> None:
    with pytest.raises(ValueError):
        trim_to_budget("a", "b", budget, prefix_share=share)
