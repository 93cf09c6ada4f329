"""FIM prompt templates, one per model family, with the special tokens each was trained on.

Every template renders `prefix` + `suffix` (and optionally repository snippets) into the raw
prompt string a backend sends without its own chat template. `stop` lists the special
tokens that end a FIM answer for that family; the post-processor cuts at them too, because
some backends return special tokens as text.

Multi-file prompts: Qwen2.5-Coder and StarCoder2 were trained with `repo_name`/`file_sep`
tokens and get that form whenever `context` or `repo_name` is given. The other families
get each context file as a block headed by a path comment, placed before the prefix.

Indentation healing: byte-level BPE tokenizers such as Qwen2.5-Coder's (checked) put a
word's leading space in the word's token, so an indented line reads `"       "` +
`" return"`, not `"        "` + `"return"`. A prompt
that ends inside a line's indentation (the usual multi-line cursor) ends on a token the
model never saw before code, and it answers with more indentation (measured on
Qwen2.5-Coder-0.5B: 7 of 40 multi-line answers began with 4 stray spaces). So when the
cursor's line is nothing but indentation ending in a space, the prompt leaves out that
last space (`heal_indent`) and the post-processor drops the one space the answer then
starts with (`indent_healed` tells both sides).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from mimiverse.config import Family
from mimiverse.errors import ConfigError

RepoStyle = Literal["qwen", "starcoder"]


@dataclass(frozen=True)
class ContextFile:
    """A repository snippet shown to the model before the current file."""

    path: str
    text: str


@dataclass(frozen=True)
class FimTemplate:
    """How one family spells a FIM prompt.

    `pre`, `suf` and `mid` are the literal texts put before the prefix, before the suffix
    and at the end (spaces included: CodeLlama and Codestral were trained with them).
    """

    family: str
    stop: tuple[str, ...]
    pre: str
    suf: str
    mid: str
    suffix_first: bool = False  # Codestral: [SUFFIX]…[PREFIX]…, the answer follows the prefix
    repo_style: RepoStyle | None = None  # native multi-file form, if the family has one

    def render(
        self,
        prefix: str,
        suffix: str,
        *,
        path: str | None = None,
        context: Sequence[ContextFile] = (),
        repo_name: str | None = None,
    ) -> str:
        prefix = heal_indent(prefix)
        if self.repo_style == "qwen" and (context or repo_name is not None):
            return self._render_qwen_repo(prefix, suffix, path, context, repo_name)
        if self.repo_style == "starcoder" and (context or repo_name is not None):
            return self._render_starcoder_repo(prefix, suffix, path, context, repo_name)
        if context:
            prefix = _comment_blocks(self, context, path) + prefix
        return self._fim(prefix, suffix)

    def context_block(self, item: ContextFile) -> str:
        """The exact text one context file adds to a prompt (what its budget counts)."""
        if self.repo_style == "qwen":
            return f"<|file_sep|>{item.path}\n{item.text}\n"
        if self.repo_style == "starcoder":
            return f"<file_sep>{item.path}\n{item.text}"
        text = item.text if item.text.endswith("\n") else item.text + "\n"
        # The blank line separates the snippet from whatever follows it.
        return f"{comment_prefix(item.path)} {item.path}\n{text}\n"

    def context_overhead(self, path: str | None, repo_name: str | None) -> str:
        """What adding any context costs besides its blocks: repository and file headers."""
        if self.repo_style == "qwen":
            repo = f"<|repo_name|>{repo_name}\n" if repo_name is not None else ""
            return repo + "<|file_sep|>" + (f"{path}\n" if path is not None else "")
        if self.repo_style == "starcoder":
            repo = f"<repo_name>{repo_name}" if repo_name is not None else ""
            return repo + "<file_sep>" + (f"{path}\n" if path is not None else "")
        return f"{comment_prefix(path)} {path}\n" if path is not None else ""

    def _fim(self, prefix: str, suffix: str) -> str:
        if self.suffix_first:
            return f"{self.suf}{suffix}{self.pre}{prefix}{self.mid}"
        return f"{self.pre}{prefix}{self.suf}{suffix}{self.mid}"

    def _render_qwen_repo(
        self,
        prefix: str,
        suffix: str,
        path: str | None,
        context: Sequence[ContextFile],
        repo_name: str | None,
    ) -> str:
        # Layout from the Qwen2.5-Coder README ("repository level code infilling").
        parts: list[str] = []
        if repo_name is not None:
            parts.append(f"<|repo_name|>{repo_name}\n")
        parts.extend(self.context_block(item) for item in context)
        parts.append("<|file_sep|>")
        if path is not None:
            parts.append(f"{path}\n")
        parts.append(self._fim(prefix, suffix))
        return "".join(parts)

    def _render_starcoder_repo(
        self,
        prefix: str,
        suffix: str,
        path: str | None,
        context: Sequence[ContextFile],
        repo_name: str | None,
    ) -> str:
        # Layout from the StarCoder2 paper: no newline after the repo name or between files;
        # the current file's path sits right after <fim_prefix>.
        parts: list[str] = []
        if repo_name is not None:
            parts.append(f"<repo_name>{repo_name}")
        parts.extend(self.context_block(item) for item in context)
        parts.append("<file_sep>")
        head = f"{path}\n" if path is not None else ""
        parts.append(self._fim(head + prefix, suffix))
        return "".join(parts)


def indent_healed(prefix: str) -> bool:
    """True when the cursor's line is only indentation ending in a space: the prompt then
    shows one space less, and the answer's leading space stands for it."""
    line = prefix[prefix.rfind("\n") + 1 :]
    return line.endswith(" ") and not line.strip()


def heal_indent(prefix: str) -> str:
    """The prefix as the prompt shows it (see the module docstring)."""
    return prefix[:-1] if indent_healed(prefix) else prefix


_SLASH_COMMENT = frozenset(
    {
        "js", "jsx", "mjs", "cjs", "ts", "tsx", "mts", "cts", "go", "rs", "java", "kt",
        "kts", "scala", "swift", "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "hxx", "cs",
        "fs", "dart", "php", "zig", "groovy", "gradle", "proto", "sol", "vue", "svelte",
    }
)  # fmt: skip
_DASH_COMMENT = frozenset({"sql", "lua", "hs", "elm", "ada", "adb", "ads"})


def comment_prefix(path: str) -> str:
    """Line-comment marker for a file, from its extension; `#` when unknown."""
    ext = posixpath.splitext(path.replace("\\", "/"))[1].lstrip(".").lower()
    if ext in _SLASH_COMMENT:
        return "//"
    if ext in _DASH_COMMENT:
        return "--"
    return "#"


def _comment_blocks(template: FimTemplate, context: Sequence[ContextFile],
                    path: str | None) -> str:
    parts = [template.context_block(item) for item in context]
    if path is not None:
        # Name the current file too, so the model knows where the snippets end.
        parts.append(f"{comment_prefix(path)} {path}\n")
    return "".join(parts)


TEMPLATES: dict[str, FimTemplate] = {
    "qwen2.5-coder": FimTemplate(
        family="qwen2.5-coder",
        stop=(
            "<|endoftext|>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
            "<|im_start|>",
            "<|im_end|>",
        ),
        pre="<|fim_prefix|>",
        suf="<|fim_suffix|>",
        mid="<|fim_middle|>",
        repo_style="qwen",
    ),
    "starcoder2": FimTemplate(
        family="starcoder2",
        stop=(
            "<|endoftext|>",
            "<file_sep>",
            "<fim_prefix>",
            "<fim_suffix>",
            "<fim_middle>",
            "<fim_pad>",
            "<repo_name>",
        ),
        pre="<fim_prefix>",
        suf="<fim_suffix>",
        mid="<fim_middle>",
        repo_style="starcoder",
    ),
    "deepseek-coder": FimTemplate(
        family="deepseek-coder",
        stop=(
            "<｜end▁of▁sentence｜>",
            "<|EOT|>",
            "<｜fim▁begin｜>",
            "<｜fim▁hole｜>",
            "<｜fim▁end｜>",
        ),
        pre="<｜fim▁begin｜>",
        suf="<｜fim▁hole｜>",
        mid="<｜fim▁end｜>",
    ),
    "codellama": FimTemplate(
        family="codellama",
        stop=("<EOT>",),
        pre="<PRE> ",
        suf=" <SUF>",
        mid=" <MID>",
    ),
    "codestral": FimTemplate(
        family="codestral",
        # Not [PREFIX]/[SUFFIX]: as text they also occur in real code (`config[PREFIX]`).
        stop=("</s>",),
        pre="[PREFIX] ",  # the space stands for SentencePiece's word-start marker
        suf="[SUFFIX]",
        mid="",
        suffix_first=True,
    ),
}

FAMILIES: tuple[str, ...] = get_args(Family)

# Substrings of a lower-cased model name (tag, HF repo id or GGUF file name) -> family.
_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("qwen2.5-coder", "qwen2.5-coder"),
    ("starcoder2", "starcoder2"),
    ("deepseek-coder", "deepseek-coder"),
    ("codellama", "codellama"),
    ("code-llama", "codellama"),
    ("codestral", "codestral"),
)


def infer_family(model: str) -> str | None:
    """The FIM family a model name belongs to, or None when the name does not say."""
    name = model.lower().replace("_", "-")
    for hint, family in _NAME_HINTS:
        if hint in name:
            return family
    return None


def template_for(model: str, family: str | None) -> FimTemplate:
    """The template for `model`: the configured family wins, else the inferred one."""
    if family is not None:
        template = TEMPLATES.get(family)
        if template is None:
            raise ConfigError(
                f"unknown FIM family {family!r} for model {model!r}; "
                f"allowed: {', '.join(FAMILIES)}"
            )
        return template
    inferred = infer_family(model)
    if inferred is None:
        raise ConfigError(
            f"cannot tell the FIM prompt family of model {model!r} from its name; "
            f"set models.completion.family to one of: {', '.join(FAMILIES)}"
        )
    return TEMPLATES[inferred]
