"""Byte-level tables for copy-constrained decoding.

:class:`TokenBytes` maps every token id to the bytes it contributes to the decoded
text. :class:`AnswerFormat` is the literal skeleton of the canonical answer
(``core.schema.answer_json``) as a byte automaton, and every table about it that
depends only on the tokenizer: which tokens can be emitted from each literal
state, which tokens can close a value, and the fewest tokens needed to finish.
Both are built once per tokenizer and shared by all requests. :class:`EscapedText`
is the request side: the input as it appears inside a JSON string.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.schema import FIELDS, answer_json

INF = 1 << 20  # "cannot finish": larger than any token budget
QUOTE = 0x22
LIT, COPY, DONE = 0, 1, 2  # RowState kinds
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")

#: An outcome is where a token leaves the automaton: an ``int`` code (see
#: AnswerFormat) or ``(field, rest)``: the token opened field's string and then
#: continues with ``rest`` inside it, which only a request's text can judge.
Outcome = int | tuple[int, bytes]


def _byte_decoder() -> dict[int, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` as a ``str.translate`` table."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {c: b for b, c in zip(bs, cs, strict=True)}


def _decoder_kinds(tokenizer: Any) -> set[str]:
    """Types of the fast tokenizer's decoder steps (plus ``ByteFallback`` from the model)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return set()
    kinds: set[str] = set()
    todo = [json.loads(backend.decoder.__getstate__())]
    while todo:
        step = todo.pop()
        kinds.add(str(step.get("type")))
        todo.extend(step.get("decoders") or [])
        if step.get("type") == "Replace" and "▁" in json.dumps(step.get("pattern"),
                                                               ensure_ascii=False):
            kinds.add("Metaspace")
    if getattr(backend.model, "byte_fallback", False):
        kinds.add("ByteFallback")
    return kinds


class TokenBytes:
    """The byte string every token id contributes to decoded text.

    Byte-level BPE pieces (GPT-2, SmolLM2, Qwen) go through the inverse of
    ``bytes_to_unicode``; sentencepiece pieces turn ``▁`` into a space and
    ``<0xNN>`` byte-fallback pieces into that byte; any other vocabulary is taken
    as UTF-8 text. Special tokens get ``None`` (never allowed inside the answer);
    non-special added tokens are stored as their raw text, as the decoder does.
    """

    def __init__(self, tokenizer: Any) -> None:
        kinds = _decoder_kinds(tokenizer)
        self.vocab_size = len(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
        added = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        special |= {i for i, t in added.items() if getattr(t, "special", False)}
        for i in added:  # specials get no bytes; other added tokens are set below
            if 0 <= i < self.vocab_size:
                pieces[i] = None
        self.tokens = self._all_bytes(pieces, kinds)
        for i in special:
            if 0 <= i < self.vocab_size:
                self.tokens[i] = None
        for i, t in added.items():
            if i not in special and 0 <= i < self.vocab_size:
                self.tokens[i] = str(t.content).encode() or None  # added text is not re-encoded
        self.lengths = np.array([len(b or b"") for b in self.tokens], dtype=np.int64)
        groups: dict[bytes, list[int]] = {}
        for i, b in enumerate(self.tokens):
            if b:
                groups.setdefault(b, []).append(i)
        #: byte string -> every id spelling it (sentencepiece may have two)
        self.ids_for: dict[bytes, tuple[int, ...]] = {b: tuple(v) for b, v in groups.items()}
        self.prefixes: set[bytes] = {b[:k] for b in groups for k in range(1, len(b) + 1)}
        self.sorted_keys: list[bytes] = sorted(groups)
        self.max_len = max((len(b) for b in groups), default=0)

    @staticmethod
    def _all_bytes(pieces: list[str | None], kinds: set[str]) -> list[bytes | None]:
        if "ByteLevel" in kinds:
            # One translate and encode for the whole vocabulary, then slice: each
            # byte-level character stands for exactly one byte.
            table = _byte_decoder()
            strs = [p or "" for p in pieces]
            try:
                blob = "".join(strs).translate(table).encode("latin-1")
            except UnicodeEncodeError:  # some piece is not byte-level: go one by one
                return [TokenBytes._one(p, table) for p in strs]
            ends = np.cumsum([len(p) for p in strs]).tolist()
            return [blob[e - len(p):e] or None for p, e in zip(strs, ends, strict=True)]
        out: list[bytes | None] = []
        for p in pieces:
            m = _BYTE_TOKEN.match(p or "") if "ByteFallback" in kinds else None
            if m:
                out.append(bytes([int(m.group(1), 16)]))
            elif "Metaspace" in kinds:
                out.append((p or "").replace("▁", " ").encode() or None)
            else:
                out.append((p or "").encode() or None)
        return out

    @staticmethod
    def _one(piece: str | None, table: dict[int, int]) -> bytes | None:
        try:
            return (piece or "").translate(table).encode("latin-1") or None
        except UnicodeEncodeError:
            return (piece or "").encode() or None

    def with_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, tuple[int, ...]]]:
        """Every (bytes, ids) whose bytes start with ``prefix``, via the sorted vocabulary."""
        keys = self.sorted_keys
        i = bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            yield keys[i], self.ids_for[keys[i]]
            i += 1


class AnswerFormat:
    """The answer's literal skeleton as a byte automaton, with per-tokenizer tables.

    The spine is the all-null answer ``{"name": null, ..., "question": null}``.
    A literal state is a position ``x`` in it (``0..n``; ``n`` is after ``}``).
    At the start of a slot (where ``null`` begins) the byte ``"`` instead opens
    that field's string; closing it resumes at the slot's end. Outcome codes:
    ``0..n`` literal state, ``FINISHED`` (EOS emitted), ``OPEN + j`` (inside
    field j's string, nothing copied yet), ``-1`` (copy continues), and
    higher codes for request-specific states.
    """

    def __init__(self, tb: TokenBytes, eos_id: int) -> None:
        spine, slots = bytearray(b"{"), []
        for i, name in enumerate(FIELDS):
            spine += (b", " if i else b"") + json.dumps(name).encode() + b": "
            slots.append(len(spine))
            spine += b"null"
        spine += b"}"
        assert bytes(spine) == answer_json({}).encode()  # keep in step with the schema
        self.spine = bytes(spine)
        self.n = len(spine)
        self.fields = len(FIELDS)
        self.slot_field = {s: j for j, s in enumerate(slots)}
        self.slot_end = [s + 4 for s in slots]
        self.FINISHED = self.n + 1
        self.OPEN = self.n + 2
        self.eos_id = eos_id
        self._build_literal(tb)
        self._build_closers(tb)
        self._build_min_cost()

    def walk(self, x: int, data: bytes, i: int = 0) -> tuple[str, int, int] | None:
        """Consume ``data[i:]`` from literal state ``x``.

        Returns ``("lit", x2, len)`` when all of it is literal, ``("open", j, k)``
        when ``data[k - 1]`` opened field j's string (``data[k:]`` is not
        consumed), or None when the bytes cannot follow.
        """
        spine, n = self.spine, self.n
        while i < len(data):
            if data[i] == QUOTE and x in self.slot_field:
                return ("open", self.slot_field[x], i + 1)
            if x >= n or data[i] != spine[x]:
                return None
            x += 1
            i += 1
        return ("lit", x, i)

    def _outcome(self, x: int, data: bytes, i: int) -> Outcome | None:
        step = self.walk(x, data, i)
        if step is None:
            return None
        kind, val, k = step
        if kind == "lit":
            return val
        return self.OPEN + val if k == len(data) else (val, data[k:])

    def _build_literal(self, tb: TokenBytes) -> None:
        """Tokens allowed in each literal state: prefixes of the remaining spine,
        and tokens that open a string at a slot on the way (maybe copying on)."""
        rows: list[tuple[int, int, int]] = [(self.n, self.eos_id, self.FINISHED)]
        #: (x, token, field, rest): opened a string and copied ``rest``; per request
        self.lit_complex: list[tuple[int, int, int, bytes]] = []
        for x in range(self.n):
            rest = self.spine[x:]
            for k in range(min(tb.max_len, len(rest)) + 1):
                pre = rest[:k]
                if k and pre not in tb.prefixes:
                    break
                for t in tb.ids_for.get(pre, ()) if k else ():
                    rows.append((x, t, x + k))
                if x + k not in self.slot_field:
                    continue
                for b, ids in tb.with_prefix(pre + b'"'):
                    out = self._outcome(x, b, 0)
                    for t in ids:
                        if isinstance(out, int):
                            rows.append((x, t, out))
                        elif out is not None:
                            self.lit_complex.append((x, t, out[0], out[1]))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
        self.lit_x, self.lit_tok, self.lit_out = arr[:, 0], arr[:, 1], arr[:, 2]

    def _build_closers(self, tb: TokenBytes) -> None:
        """Tokens holding a string's closing quote: ``content + '"' + rest``.

        ``close0[j]``: (token, outcome) whose first byte is the closing quote of
        field j. ``by_content[c]``: (token, field, outcome) for tokens that copy
        ``c`` first; a request allows them where its text has ``c`` ending at a
        character boundary.
        """
        self.close0: list[list[tuple[int, Outcome]]] = [[] for _ in range(self.fields)]
        self.by_content: dict[bytes, list[tuple[int, int, Outcome]]] = {}
        for b, ids in tb.ids_for.items():
            k = b.find(b'"')
            while k >= 0:
                for j in range(self.fields):
                    out = self._outcome(self.slot_end[j], b, k + 1)
                    if out is None:
                        continue
                    for t in ids:
                        if k == 0:
                            self.close0[j].append((t, out))
                        else:
                            self.by_content.setdefault(b[:k], []).append((t, j, out))
                k = b.find(b'"', k + 1)

    def _build_min_cost(self) -> None:
        """``min_cost[x]``: fewest tokens from literal state x to EOS, all slots null."""
        cost = np.full(self.n + 1, INF, dtype=np.int64)
        cost[self.n] = 1
        for x in range(self.n - 1, -1, -1):
            outs = self.lit_out[(self.lit_x == x) & (self.lit_out <= self.n)]
            if len(outs):
                cost[x] = min(INF, 1 + int(cost[outs].min()))
        self.min_cost = cost
        if cost[0] >= INF:
            raise ValueError("this tokenizer cannot spell the answer format")


def _escape_char(ch: str) -> bytes:
    """``ch`` as ``json.dumps(ensure_ascii=False)`` writes it inside a string.

    A lone surrogate cannot be UTF-8, so it gets its ``\\uXXXX`` escape, which
    still decodes back to that character."""
    o = ord(ch)
    if ch in '"\\' or o < 0x20:
        return json.dumps(ch)[1:-1].encode()
    if 0xD800 <= o < 0xE000:
        return f"\\u{o:04x}".encode()
    return ch.encode()


class EscapedText:
    """The escaped input ``data`` and per-byte-position facts about it.

    ``cut[p]``: p is a character boundary (a value may start or end there).
    ``cidx[p]``: index of the character holding byte p. ``nc[p]``: the first
    boundary after p. ``lim[s]``: how far a value starting at s may reach under
    the character cap (the end of the text without one).
    """

    def __init__(self, text: str, cap: int | None) -> None:
        pieces = [_escape_char(c) for c in text]
        self.data = b"".join(pieces)
        n = self.n = len(self.data)
        m = len(pieces)
        lens = np.array([len(p) for p in pieces], dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.bounds = bounds  # byte position of each character boundary
        self.cut = np.zeros(n + 1, dtype=bool)
        self.cut[bounds] = True
        self.cidx = np.concatenate([np.repeat(np.arange(m), lens), [m]]).astype(np.int64)
        self.nc = np.append(bounds[self.cidx[:-1] + 1], INF)
        if cap is None:
            self.lim = np.full(n + 1, n, dtype=np.int64)
        else:
            self.lim = bounds[np.minimum(self.cidx + max(cap, 1), m)]

    def source_offset(self, p: int) -> int:
        """:func:`source_offset` with this text's tables: O(1)."""
        if not 0 <= p <= self.n or not self.cut[p]:
            raise ValueError(f"escaped offset {p} is not a character boundary of 0..{self.n}")
        return int(self.cidx[p])


def source_offset(text: str, offset: int) -> int:
    """The character offset in ``text`` of byte ``offset`` of its escaped form.

    The escaped form is ``json.dumps(text, ensure_ascii=False)[1:-1]`` as UTF-8
    (what a value is copied from): an escape such as ``\\"``, ``\\n`` or
    ``\\ud800`` is several bytes for one character, and so is any non-ASCII
    character. ``offset`` must be a character boundary (0 and the end included),
    else ``ValueError``.
    """
    pos = i = 0
    while i < len(text) and pos < offset:
        pos += len(_escape_char(text[i]))
        i += 1
    if pos != offset:
        raise ValueError(f"escaped offset {offset} is not a character boundary")
    return i


#: Full-width ASCII folded to ASCII, one character for one (positions are kept).
_FOLD_WIDTH = {c: chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def email_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the e-mail addresses in ``text``, full-width ones too."""
    return [m.span() for m in EMAIL_RE.finditer(text.translate(_FOLD_WIDTH))]


def span_tables(esc: EscapedText, spans: list[tuple[int, int]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(reach, starts, ends)`` over the byte positions of ``E`` for character ``spans``.

    ``reach[p]``: the end of the span holding p, else -1; ``starts``/``ends``: masks
    of where a span starts and ends. A value confined to the spans copies from p to
    at most ``reach[p]``, starts at a span's start and closes at its end."""
    reach = np.full(esc.n + 1, -1, dtype=np.int64)
    starts, ends = np.zeros(esc.n + 1, dtype=bool), np.zeros(esc.n + 1, dtype=bool)
    for s, e in spans:
        lo, hi = esc.bounds[s], esc.bounds[e]
        reach[lo:hi], starts[lo], ends[hi] = hi, True, True
    return reach, starts, ends


@dataclass(frozen=True, eq=False)
class RowState:
    """Where one row is: a literal state, a value being copied, or finished."""

    kind: int
    x: int = 0  # LIT: position in the spine
    field: int = 0  # COPY: which value
    pos: np.ndarray | None = None  # COPY: ends in E where the copied bytes occur
    copied: int = 0  # COPY: bytes copied into this value so far
    #: (field, start, end) in E of values that the token leading here closed
    #: (first occurrence); only request-specific states reached by one token
    #: that copies, closes and goes on carry any
    closed: tuple[tuple[int, int, int], ...] = ()


def copy_matches(tb: TokenBytes, esc: EscapedText) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tok, start, end) for every token equal to ``E[start:end]``: a walk of the
    vocabulary's prefix set from each byte position of the escaped text."""
    data, prefixes, ids_for = esc.data, tb.prefixes, tb.ids_for
    n, longest = len(data), tb.max_len
    toks: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for p in range(n):
        for e in range(p + 1, min(n, p + longest) + 1):
            piece = data[p:e]
            if piece not in prefixes:
                break
            for t in ids_for.get(piece, ()):
                toks.append(t)
                starts.append(p)
                ends.append(e)
    return (np.array(toks, dtype=np.int64), np.array(starts, dtype=np.int64),
            np.array(ends, dtype=np.int64))


def closer_matches(fmt: AnswerFormat,
                   esc: EscapedText) -> list[list[tuple[int, int, int, Outcome]]]:
    """Per field, (tok, start, end, outcome) for tokens ``E[start:end] + '"' + ...``
    whose copied part ends at a character boundary."""
    data, cut = esc.data, esc.cut
    found: list[list[tuple[int, int, int, Outcome]]] = [[] for _ in range(fmt.fields)]
    for content, items in fmt.by_content.items():
        k = len(content)
        p = data.find(content)
        while p >= 0:
            if cut[p + k]:
                for t, j, out in items:
                    found[j].append((t, p, p + k, out))
            p = data.find(content, p + 1)
    return found
