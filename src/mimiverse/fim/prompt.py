"""Fit a FIM prefix and suffix into a token budget.

Counting is an estimate (no tokenizer on the request path); budgets leave headroom for it.
Trimming keeps the text nearest the cursor and cuts at line boundaries, so the model sees
whole lines; only a single line next to the cursor that is larger than its whole share is
cut inside.

A trimmed prefix starts at a line whose number is a multiple of `PREFIX_STEP_LINES`: as a
developer types, the start stays put until the prefix has grown by that many lines, so
consecutive prompts for one file share their beginning and an engine with a prompt cache
(llama.cpp, Ollama) re-reads only what changed near the cursor.
"""

from __future__ import annotations

from collections.abc import Callable

# Code tokenizers (Qwen, StarCoder, DeepSeek, Llama) average roughly 3.5 UTF-8 bytes per
# token on source code; counting bytes makes CJK text (3 bytes a character) cost more.
_BYTES_PER_TOKEN_X2 = 7  # 3.5 as a fraction, to stay in integers

# Upper bound on characters per token: a longer line is not counted at all, and the
# search for a cut inside a line looks at no more than this many characters per token.
_MAX_CHARS_PER_TOKEN = 32

PREFIX_STEP_LINES = 8


def utf8_size(text: str) -> int:
    # surrogatepass: a lone surrogate from a JSON client must not raise here.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def estimate_tokens(text: str) -> int:
    """Fast, deterministic token estimate: ceil(utf8_bytes / 3.5)."""
    return (2 * utf8_size(text) + _BYTES_PER_TOKEN_X2 - 1) // _BYTES_PER_TOKEN_X2


def conservative_tokens(text: str) -> int:
    """An upper-leaning estimate, ceil(utf8_bytes / 2.5), for budgets that must hold when
    no tokenizer is at hand (repository context): dense code runs near 2.5 bytes a token."""
    return (2 * utf8_size(text) + 4) // 5


def lenient_tokens(text: str) -> int:
    """A low estimate, utf8_bytes / 4, for limits that must refuse only what surely does
    not fit: few texts run at more than 4 bytes a token."""
    return utf8_size(text) // 4


def trim_to_budget(
    prefix: str,
    suffix: str,
    budget_tokens: int,
    *,
    prefix_share: float = 0.75,
    count: Callable[[str], int] = estimate_tokens,
) -> tuple[str, str]:
    """Keep the end of `prefix` and the start of `suffix` within `budget_tokens`.

    The prefix gets `prefix_share` of the budget, the suffix the rest; a side that needs
    less than its share gives the remainder to the other. Inputs that fit come back as is.
    """
    if budget_tokens < 0:
        raise ValueError(f"budget_tokens must be >= 0, got {budget_tokens}")
    if not 0.0 <= prefix_share <= 1.0:
        raise ValueError(f"prefix_share must be within [0, 1], got {prefix_share}")
    prefix_need = count(prefix)
    suffix_need = count(suffix)
    if prefix_need + suffix_need <= budget_tokens:
        return prefix, suffix
    prefix_budget = int(budget_tokens * prefix_share)
    suffix_budget = budget_tokens - prefix_budget
    if suffix_need <= suffix_budget:
        return _keep_tail(prefix, budget_tokens - suffix_need, count)[0], suffix
    if prefix_need <= prefix_budget:
        return prefix, _keep_head(suffix, budget_tokens - prefix_need, count)
    kept, used = _keep_tail(prefix, prefix_budget, count)
    # Whole-line cutting may leave part of the prefix share unused: the suffix gets it.
    return kept, _keep_head(suffix, budget_tokens - used, count)


def _snap(text: str, start: int, count: Callable[[str], int], used: int) -> tuple[int, int]:
    """Move a kept tail's start forward to the next line numbered a multiple of
    PREFIX_STEP_LINES (never past the cursor's line); returns it and the new cost."""
    line = text.count("\n", 0, start)
    target = -(-line // PREFIX_STEP_LINES) * PREFIX_STEP_LINES
    snapped = start
    for _ in range(target - line):
        newline = text.find("\n", snapped)
        if newline < 0 or newline + 1 >= len(text):
            return start, used
        snapped = newline + 1
    if snapped == start or "\n" not in text[snapped:]:
        return start, used
    return snapped, used - count(text[start:snapped])


def _keep_tail(text: str, budget: int, count: Callable[[str], int]) -> tuple[str, int]:
    """Longest run of whole lines at the end of `text` within `budget`, and its cost."""
    start = len(text)
    used = 0
    # The first segment is the cursor's line (after the last newline, maybe empty); each
    # later one is a whole line with its newline. Only kept lines are ever counted.
    line_start = text.rfind("\n", 0, start) + 1
    while True:
        if _too_long(start - line_start, budget - used):
            break
        cost = count(text[line_start:start])
        if used + cost > budget:
            break
        used += cost
        start = line_start
        if start == 0:
            return text, used
        line_start = text.rfind("\n", 0, start - 1) + 1
    if text[start:].strip():
        start, used = _snap(text, start, count, used)
        return text[start:], used
    # Nothing but blank space fits: cut inside the line next to the cursor.
    line = text[line_start:start]
    keep = _fit_chars(len(line), budget - used, lambda n: count(line[len(line) - n :]))
    kept = line[len(line) - keep :] + text[start:]
    return kept, used + count(line[len(line) - keep :])


def _keep_head(text: str, budget: int, count: Callable[[str], int]) -> str:
    """Longest run of whole lines at the start of `text` within `budget`."""
    end = 0
    used = 0
    size = len(text)
    while end < size:
        newline = text.find("\n", end)
        line_end = size if newline < 0 else newline + 1
        if _too_long(line_end - end, budget - used):
            break
        cost = count(text[end:line_end])
        if used + cost > budget:
            break
        used += cost
        end = line_end
    else:
        return text
    if text[:end].strip():
        return text[:end]
    line = text[end:line_end]
    keep = _fit_chars(len(line), budget - used, lambda n: count(line[:n]))
    return text[:end] + line[:keep]


def _too_long(length: int, budget: int) -> bool:
    # Skips counting a line that cannot fit anyway (a minified multi-MB line, say).
    return length > max(budget, 0) * _MAX_CHARS_PER_TOKEN


def _fit_chars(length: int, budget: int, cost_of: Callable[[int], int]) -> int:
    """Largest n <= length with cost_of(n) <= budget (cost grows with n): binary search."""
    low, high = 0, min(length, max(budget, 0) * _MAX_CHARS_PER_TOKEN)
    while low < high:
        mid = (low + high + 1) // 2
        if cost_of(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low
