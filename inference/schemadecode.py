"""The ``schema`` decoding mode: the answer must match the Complaint JSON Schema.

xgrammar compiles :func:`core.schema.complaint_json_schema` once per tokenizer
(keys in schema order, ``", "`` and ``": "`` separators, no free whitespace,
so the layout equals the training targets). At each step a per-row grammar
matcher masks every token that would break the schema.

A JSON Schema alone does not make a small model finish: it can stay inside a
string until its budget runs out. So each row also gets a closing phase: once
its remaining budget is just enough to write the shortest valid ending (close
the string, ``null`` for every key not yet written, ``}``), only the token that
spells the next piece of that ending is allowed. A row therefore yields
parseable, schema-valid JSON within its budget (when the budget can hold the
all-null answer at all), and it stops the moment ``}`` is written.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import xgrammar as xgr
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from core.schema import FIELDS, complaint_json_schema

#: Steps added to the closing estimate, in case the next piece of the ending
#: is not allowed at once.
CLOSING_SLACK_STEPS = 2


@dataclass(frozen=True)
class Grammar:
    """The compiled schema for one tokenizer, plus its tokens' byte strings."""

    compiled: Any
    vocab_size: int
    token_bytes: list[bytes]
    by_bytes: dict[bytes, int]
    max_token_bytes: int
    continuations: list[int]

    def spell(self, text: bytes) -> list[int]:
        """Greedy longest-match tokens spelling ``text`` (used to plan the ending)."""
        ids, pos = [], 0
        while pos < len(text):
            for size in range(min(self.max_token_bytes, len(text) - pos), 0, -1):
                tid = self.by_bytes.get(text[pos:pos + size])
                if tid is not None:
                    ids.append(tid)
                    pos += size
                    break
            else:
                raise ValueError(f"byte {text[pos]!r} at {pos} has no token")
        return ids


_GRAMMARS: dict[int, tuple[weakref.ref[Any], Grammar]] = {}


def grammar_for(tokenizer: Any) -> Grammar:
    """The compiled schema grammar for ``tokenizer``; compiled once, then cached."""
    hit = _GRAMMARS.get(id(tokenizer))
    if hit is not None and hit[0]() is tokenizer:
        return hit[1]
    info = _tokenizer_info(tokenizer)
    compiled = xgr.GrammarCompiler(info).compile_json_schema(
        complaint_json_schema(), any_whitespace=False, separators=(", ", ": ")
    )
    token_bytes = [bytes(b) for b in info.decoded_vocab]
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    by_bytes: dict[bytes, int] = {}
    for i, b in enumerate(token_bytes):
        if b and i not in special:
            by_bytes.setdefault(b, i)
    continuations = [i for b, i in by_bytes.items() if len(b) == 1 and 0x80 <= b[0] <= 0xBF]
    grammar = Grammar(compiled, int(info.vocab_size), token_bytes, by_bytes,
                      max(len(b) for b in by_bytes), continuations)
    _GRAMMARS[id(tokenizer)] = (weakref.ref(tokenizer), grammar)
    return grammar


def _tokenizer_info(tokenizer: Any) -> Any:
    """xgrammar's view of the vocabulary.

    A sentencepiece-style vocabulary without ``<0xNN>`` byte pieces is detected
    as RAW, which would take ``▁`` literally and make ``", "`` unspellable; such
    a vocabulary is read with the ``▁``-means-space convention instead.
    """
    info = xgr.TokenizerInfo.from_huggingface(tokenizer)
    vocab = tokenizer.get_vocab()
    if info.vocab_type != xgr.VocabType.RAW or not any("\u2581" in t for t in vocab):
        return info
    encoded = [""] * int(info.vocab_size)
    for token, i in vocab.items():
        if i < len(encoded):
            encoded[i] = token
    return xgr.TokenizerInfo(encoded, xgr.VocabType.BYTE_FALLBACK,
                             vocab_size=info.vocab_size,
                             stop_token_ids=list(info.stop_token_ids), add_prefix_space=True)


def _rest(keys: tuple[str, ...]) -> bytes:
    return b"".join(f', "{k}": null'.encode() for k in keys) + b"}"


def _value_tail(prefix: bytes, pos: int) -> tuple[int, bytes | None]:
    """``(end, None)`` for a complete value at ``pos``, or ``(pos, tail)`` for an open one."""
    if pos >= len(prefix):
        return pos, b"null"
    if prefix[pos] != ord('"'):
        word = prefix[pos:pos + 4]
        return (pos + 4, None) if len(word) == 4 else (pos, b"null"[len(word):])
    esc, hex_left, i = False, 0, pos + 1
    while i < len(prefix):
        byte = prefix[i]
        if hex_left:
            hex_left -= 1
        elif esc:
            esc, hex_left = False, 4 if byte == ord("u") else 0
        elif byte == ord("\\"):
            esc = True
        elif byte == ord('"'):
            return i + 1, None
        i += 1
    return pos, b"0" * hex_left + (b"n" if esc else b"") + b'"'


def _max_tail_bytes() -> int:
    # The all-null answer is the longest ending, give or take a pending escape.
    return len(_rest(FIELDS)) + len(b'{"name": null') + len(b'\\u0000"')


def closing_tail(prefix: bytes, fields: tuple[str, ...] = FIELDS) -> bytes:
    """The shortest bytes that turn ``prefix`` into a complete answer.

    ``prefix`` must be what the schema grammar allows so far. An open string is
    closed (a pending escape is completed first), a started ``null`` or key is
    finished, and every key not yet written follows as ``null``, then ``}``.
    """
    pos = 0
    for j, key in enumerate(fields):
        lit = (b"{" if j == 0 else b", ") + f'"{key}": '.encode()
        seen = prefix[pos:pos + len(lit)]
        if len(seen) < len(lit):
            return lit[len(seen):] + b"null" + _rest(fields[j + 1:])
        end, tail = _value_tail(prefix, pos + len(lit))
        if tail is not None:
            return tail + _rest(fields[j + 1:])
        pos = end
    return b"" if prefix[pos:pos + 1] == b"}" else b"}"


_MAX_TAIL_BYTES = _max_tail_bytes()


@dataclass
class SchemaConstraint(LogitsProcessor):
    """Grammar matchers for the rows of one ``generate`` call.

    Used as the logits processor (mask, closing phase) and, through
    :class:`SchemaStop`, as the stopping criterion: a row is finished as soon as
    its answer is complete.
    """

    grammar: Grammar
    budgets: list[int]
    matchers: list[Any] = field(default_factory=list)
    out: list[bytearray] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)
    prompt_len: int | None = None
    seen: int = 0
    forced_steps: int = 0
    _bitmask: Any = None

    def __post_init__(self) -> None:
        n = len(self.budgets)
        self.matchers = [xgr.GrammarMatcher(self.grammar.compiled) for _ in range(n)]
        self.out = [bytearray() for _ in range(n)]
        self.done = [False] * n
        self._bitmask = xgr.allocate_token_bitmask(n, self.grammar.vocab_size)

    def advance(self, input_ids: torch.Tensor) -> None:
        """Feed every token generated since the last call to its row's matcher."""
        if self.prompt_len is None:  # called as a stopping criterion before any mask
            self.prompt_len = int(input_ids.shape[1]) - 1
        generated = int(input_ids.shape[1]) - self.prompt_len
        if generated <= self.seen:
            return
        for row, tokens in enumerate(input_ids[:, self.prompt_len + self.seen:].tolist()):
            for tid in tokens:
                if self.done[row]:
                    break
                if not self.matchers[row].accept_token(tid):
                    self.done[row] = True  # padding after the row stopped
                    break
                self.out[row] += self.grammar.token_bytes[tid]
                self.done[row] = self.matchers[row].is_completed()
        self.seen = generated

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        if self.prompt_len is None:
            self.prompt_len = int(input_ids.shape[1])
        self.advance(input_ids)
        active = [r for r, d in enumerate(self.done) if not d]
        for row in active:
            self.matchers[row].fill_next_token_bitmask(self._bitmask, row)
        vocab = self.grammar.vocab_size
        if active:
            xgr.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device),
                                            vocab_size=min(vocab, scores.shape[1]),
                                            indices=active)
        if scores.shape[1] > vocab:  # padded embedding rows are never real tokens
            scores[:, vocab:] = float("-inf")
        for row in active:
            forced = self._closing_token(row)
            if forced is not None:
                scores[row] = float("-inf")
                scores[row, forced] = 0.0
                self.forced_steps += 1
        return scores

    def _closing_token(self, row: int) -> int | None:
        """The next token of the shortest ending, once the budget only just holds it."""
        left = self.budgets[row] - self.seen
        if left > _MAX_TAIL_BYTES + CLOSING_SLACK_STEPS:  # no ending is that long
            return None
        tail = closing_tail(bytes(self.out[row]))
        missing = utf8_missing(self.out[row])
        plan = self.grammar.spell(tail) if tail else []
        if not plan or left > missing + len(plan) + CLOSING_SLACK_STEPS:
            return None
        if missing:  # a byte-level token stopped inside a character: finish it first
            return next((t for t in self.grammar.continuations
                         if _allowed(self._bitmask, row, t)), None)
        for size in range(min(self.grammar.max_token_bytes, len(tail)), 0, -1):
            tid = self.grammar.by_bytes.get(tail[:size])
            if tid is not None and _allowed(self._bitmask, row, tid):
                return tid
        return None


def utf8_missing(buf: bytes | bytearray) -> int:
    """How many continuation bytes the last, unfinished UTF-8 character still needs."""
    for back in range(1, min(4, len(buf)) + 1):
        byte = buf[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:  # the lead byte tells the character's length
            size = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return max(0, size - back)
    return 0


def _allowed(bitmask: torch.Tensor, row: int, tid: int) -> bool:
    return bool((int(bitmask[row, tid // 32]) >> (tid % 32)) & 1)


class SchemaStop(StoppingCriteria):
    """Stops each row as soon as its matcher has a complete answer."""

    def __init__(self, constraint: SchemaConstraint) -> None:
        self.constraint = constraint

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> Any:
        self.constraint.advance(input_ids)
        return torch.tensor(self.constraint.done, dtype=torch.bool, device=input_ids.device)


class SchemaDecoder:
    """Decoder for ``decoding="schema"``: JSON-Schema mask plus a closing phase."""

    def __init__(self, tokenizer: Any) -> None:
        self.grammar = grammar_for(tokenizer)
        self.last: SchemaConstraint | None = None

    def min_tokens(self) -> int:
        """Tokens the all-null answer needs; smaller budgets cannot be honoured."""
        return len(self.grammar.spell(closing_tail(b""))) + CLOSING_SLACK_STEPS

    def generate_kwargs(self, texts: list[str], budgets: list[int]) -> dict[str, Any]:
        """A fresh constraint for one batch (matchers are stateful)."""
        constraint = SchemaConstraint(self.grammar, list(budgets))
        self.last = constraint
        return {
            "logits_processor": LogitsProcessorList([constraint]),
            "stopping_criteria": StoppingCriteriaList([SchemaStop(constraint)]),
        }
