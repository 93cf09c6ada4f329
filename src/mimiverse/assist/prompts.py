"""The chat prompts of ask, explain and debug, built within the chat model's budget.

Sources come in priority order and each is counted as the exact block it adds to the
prompt; one that does not fit is left out (a smaller one after it may still fit), so the
prompt never exceeds `models.chat.max_prompt_tokens` and `sources` lists exactly what the
model was shown, numbered as the prompt numbers them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mimiverse.assist.retrieval import Source
from mimiverse.backends.base import ChatMessage
from mimiverse.errors import PromptTooLong

Count = Callable[[str], int]

ASK_SYSTEM = (
    "You answer questions about a code repository. Numbered sources from the repository "
    "follow; base the answer on them, cite them as [n], and say so when they do not hold "
    "the answer instead of guessing."
)
EXPLAIN_SYSTEM = (
    "You explain code to a developer who is reading it: what the selected code does, how, "
    "and why it is written that way. Numbered sources give its enclosing definition, the "
    "definitions of the names it uses and its callers; cite them as [n]."
)
DEBUG_SYSTEM = (
    "You are a debugging assistant. From the error output and the numbered sources (the "
    "code of the stack frames, innermost first, `>` marking each frame's line, and related "
    "definitions), give a short diagnosis of the cause, then a fix as a unified diff "
    "(--- a/PATH, +++ b/PATH, @@ hunks) against the files as shown."
)
SAFETY_TOKENS = 64  # what roles and message separators may add in the model's template


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: tuple[ChatMessage, ...]
    sources: tuple[Source, ...]


def source_block(number: int, source: Source) -> str:
    where = f"{source.path}:{source.start_line}-{source.end_line}"
    name = f" {source.symbol}" if source.symbol else ""
    body = source.text
    if source.role == "frame" and source.line is not None:
        body = _mark_line(source)
    return f"[{number}] {where}{name} ({source.role})\n```{source.language or ''}\n{body}\n```\n"


def _mark_line(source: Source) -> str:
    lines = source.text.split("\n")
    return "\n".join(
        ("> " if source.start_line + i == source.line else "  ") + text
        for i, text in enumerate(lines)
    )


def pack(candidates: Sequence[Source], budget: int, count: Count) -> tuple[list[Source], str]:
    """The candidates that fit in `budget` tokens, in order, and their rendered blocks."""
    chosen: list[Source] = []
    blocks: list[str] = []
    used = 0
    for source in candidates:
        block = source_block(len(chosen) + 1, source)
        cost = count(block)
        if used + cost > budget:
            continue
        chosen.append(source)
        blocks.append(block)
        used += cost
    return chosen, "\n".join(blocks)


def build(system: str, history: Sequence[ChatMessage], before: str, after: str,
          candidates: Sequence[Source], total: int, count: Count) -> Prompt:
    """[system, *history, user]: the user message is `before`, the sources that fit, then
    `after` (the question last, nearest the answer)."""
    fixed = count(system) + sum(count(m.content) for m in history) + count(before + after)
    budget = total - fixed - SAFETY_TOKENS
    if budget < 0:
        raise PromptTooLong(
            f"the question and conversation take about {fixed} tokens; the chat model takes "
            f"at most {total} (models.chat.max_prompt_tokens)"
        )
    chosen, blocks = pack(candidates, budget, count)
    sources = f"Sources:\n\n{blocks}\n" if blocks else "Sources: none found in the index.\n\n"
    user = before + sources + after
    return Prompt((ChatMessage("system", system), *history, ChatMessage("user", user)),
                  tuple(chosen))


def clip_middle(text: str, limit: int) -> str:
    """At most `limit` characters: the head and the tail, where errors say most."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    return text[:head] + "\n[... clipped ...]\n" + text[len(text) - (limit - head):]


def fenced(label: str, text: str, language: str | None = None) -> str:
    return f"{label}\n```{language or ''}\n{text}\n```\n\n"
