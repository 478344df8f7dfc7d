"""Copy-constrained decoding: the answer is always the canonical JSON, every value
is ``null`` or a non-empty span copied verbatim from the input, and every row ends
with EOS within its token budget.

The output automaton works on bytes. Literal states are positions in the all-null
answer (see :class:`inference.vocab.AnswerFormat`). Inside a value the state is the
set of end positions in the JSON-escaped input ``E = json.dumps(text)[1:-1]`` at
which the bytes copied so far occur (a subset construction, so a row need not
commit to one occurrence). Values start and end only at character boundaries of
``E`` (never inside a UTF-8 character or an escape such as ``\\"``), so a value
is valid JSON and ``json.loads(value)`` is a substring of the text.

Per request, :class:`RequestTables` lists for every key (literal state, "may close
field j", or "field j, position p in E") the tokens allowed there, each with the
state it leads to, the content end it reaches, and the fewest tokens needed to
finish afterwards. A decode step gathers the rows' keys from one flat array and
scatters a (batch, vocab) mask; tokens whose finishing cost exceeds the budget
left are dropped, which both forces closing in time and never enters a dead end.

With tracing (the default) a processor also keeps, per row, each chosen token's
log-probability among the tokens allowed at that step (from the masked scores it
already builds; no extra forward pass) and, when a value closes, the first
occurrence in ``E`` the copy is consistent with. :meth:`CopyLogitsProcessor.traces`
turns them into a :class:`FieldTrace` per field: the value's character span in
the original text and its confidence. Tracing never changes the mask.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from core.schema import FIELDS
from inference import vocab
from inference.vocab import (
    INF,
    QUOTE,
    AnswerFormat,
    EscapedText,
    Outcome,
    RowState,
    TokenBytes,
)

LIT, COPY, DONE = vocab.LIT, vocab.COPY, vocab.DONE
EMAIL = FIELDS.index("email")
_NO_LIMIT = np.iinfo(np.int64).max // 4


class RequestTables:
    """All per-request tables, as one CSR over keys (built once per text).

    Keys: ``0..n_spine`` literal states; then one "close field j" key per field;
    then ``cbase + j * (len(E) + 1) + p`` for copying field j at position p.
    Entry columns: ``tok``, ``end`` (content end, for the cap), ``cost`` (fewest
    tokens to finish after it), ``out`` (outcome code, -1 = copy continues),
    ``close`` (the token holds a closing quote).
    """

    def __init__(self, fmt: AnswerFormat, tb: TokenBytes, text: str, cap: int | None,
                 email_spans: bool = False) -> None:
        self.fmt, self.tb = fmt, tb
        self.esc = EscapedText(text, cap)
        nf, self.width = fmt.fields, self.esc.n + 1
        # spans[j]: (reach, starts, ends) of vocab.span_tables when field j copies only
        # whole spans (the email rule), else None
        self.spans: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * nf
        if email_spans:
            self.spans[EMAIL] = vocab.span_tables(self.esc, vocab.email_spans(text))
        self.cbase = fmt.n + 1 + nf
        self.nkeys = self.cbase + nf * self.width
        empty = np.zeros(0, dtype=np.int64)
        self.specials: list[RowState] = [RowState(COPY, field=j, pos=empty) for j in range(nf)]
        self.special_cost: list[int] = [INF] * nf
        self.fin: list[np.ndarray] = [empty] * nf
        self._memo: dict[tuple[int, bytes], int | None] = {}
        copies = vocab.copy_matches(tb, self.esc)
        found = vocab.closer_matches(fmt, self.esc)
        parts: list[tuple[np.ndarray, ...]] = []
        for j in reversed(range(nf)):  # a field's closers may lead into later fields
            parts += self._field(j, copies, found[j])
        parts.append(self._literal_entries())
        self._pack(parts)

    def costs(self, codes: np.ndarray | list[int]) -> np.ndarray:
        """Fewest tokens to finish after each outcome code (not -1)."""
        fmt, codes = self.fmt, np.asarray(codes, dtype=np.int64)
        out = np.where(codes <= fmt.n, fmt.min_cost[np.minimum(codes, fmt.n)], 0)
        special = codes >= fmt.OPEN
        out[special] = np.array(self.special_cost)[codes[special] - fmt.OPEN]
        return out

    def _resolve(self, out: Outcome) -> int | None:
        """Outcome code of a token's remainder; request-specific states are added
        to ``specials``. None when the remainder cannot be copied or finished."""
        if isinstance(out, int):
            return out if self.costs([out])[0] < INF else None
        if out not in self._memo:
            j, rest = out
            head = rest.split(b'"', 1)[0]  # cheap test first: most such copies are absent
            state = self.run(self.specials[j], rest) if head in self.esc.data else None
            code = None
            cost = self.state_cost(state) if state is not None else INF
            if state is not None and cost < INF:
                code = self.fmt.OPEN + len(self.specials)
                self.specials.append(state)
                self.special_cost.append(cost)
            self._memo[out] = code
        return self._memo[out]

    def may_close(self, st: RowState) -> bool:
        """Whether the value copied so far (``st.copied`` > 0) may close here."""
        assert st.pos is not None
        spans = self.spans[st.field]
        if spans is None:  # the copied bytes decide: same at every end
            return bool(self.esc.cut[st.pos[0]])
        return bool(spans[2][st.pos].any())  # some end closes a span

    def state_cost(self, st: RowState) -> int:
        """Fewest tokens to finish from a LIT or COPY state."""
        if st.kind == LIT:
            return int(self.fmt.min_cost[st.x])
        if st.copied == 0:
            return self.special_cost[st.field]
        assert st.pos is not None
        return int(self.fin[st.field][st.pos].min()) if len(st.pos) else INF

    def extend(self, st: RowState, chunk: bytes) -> np.ndarray:
        """Ends after copying ``chunk`` on from ``st``, within the character cap."""
        assert st.pos is not None
        if not chunk:
            return st.pos
        data, k = self.esc.data, len(chunk)
        found, p = [], data.find(chunk)
        while p >= 0:  # bytes.find beats testing every position of a large state
            found.append(p)
            p = data.find(chunk, p + 1)
        if not found:
            return np.zeros(0, dtype=np.int64)
        starts = np.array(found, dtype=np.int64)
        ends = starts[np.isin(starts, st.pos)] + k
        ends = ends[ends <= self.esc.lim[ends - (st.copied + k)]]
        spans = self.spans[st.field]
        return ends if spans is None else ends[spans[0][ends - k] >= ends]

    def run(self, st: RowState, data: bytes) -> RowState | None:
        """Feed bytes to a COPY state (the general, slow path; used for rare tokens
        that open a string and copy on). A quote closes the value when the copy so
        far ends at a character boundary; otherwise it is an escaped quote."""
        search = 0
        while True:
            k = data.find(b'"', search)
            chunk = data[:k if k >= 0 else len(data)]
            ends = self.extend(st, chunk)
            total = st.copied + len(chunk)
            if not len(ends):
                return None
            if k < 0:
                return RowState(COPY, field=st.field, pos=ends, copied=total)
            if total and self.esc.cut[ends[0]]:
                if (spans := self.spans[st.field]) is not None:  # closes at a span end
                    ends = ends[spans[2][ends]]
                    if not len(ends):
                        return None
                step = self.fmt.walk(self.fmt.slot_end[st.field], data, k + 1)
                if step is None:
                    return None
                kind, val, i = step
                done = ((st.field, int(ends[0]) - total, int(ends[0])),)  # first occurrence
                if kind == "lit":
                    return RowState(LIT, x=val, closed=done)
                nxt = self.run(self.specials[val], data[i:])
                return None if nxt is None else replace(nxt, closed=done + nxt.closed)
            search = k + 1

    def _field(self, j: int, copies: tuple[np.ndarray, ...],
               raw: list[tuple[int, int, int, Outcome]]) -> list[tuple[np.ndarray, ...]]:
        """Entries of field j, and its finishing costs by dynamic programming.

        ``fin[p]``: fewest tokens to finish with a non-empty copy ending at p, when
        the copy may only go on to the next character boundary and then close (so
        the cost never relies on growing the value past the cap)."""
        esc = self.esc
        res = np.array([(t, p, e, c) for t, p, e, o in raw
                        if (c := self._resolve(o)) is not None], dtype=np.int64).reshape(-1, 4)
        c_tok, c_p, c_end, c_out = res.T
        c0 = np.array([(t, c) for t, o in self.fmt.close0[j]
                       if (c := self._resolve(o)) is not None], dtype=np.int64).reshape(-1, 2)
        c0_cost = self.costs(c0[:, 1])
        close_cost = int(c0_cost.min()) + 1 if len(c0) else INF
        tok, p, end = (np.concatenate([a, b]) for a, b in zip(copies, (c_tok, c_p, c_end),
                                                               strict=True))
        is_copy = np.arange(len(tok)) < len(copies[0])
        out = np.concatenate([np.full(len(copies[0]), -1, dtype=np.int64), c_out])
        fixed = np.concatenate([np.full(len(copies[0]), INF), self.costs(c_out)])
        if (spans := self.spans[j]) is not None:  # copy within a span, close at its end
            reach, can_start, can_end = spans
            ok = np.where(is_copy, reach[p] >= end, can_end[end] & ((p == end) | (reach[p] >= end)))
            tok, p, end, is_copy, out, fixed = (a[ok] for a in (tok, p, end, is_copy, out, fixed))
            fin = _span_costs(p, end, is_copy, fixed, np.where(can_end, close_cost, INF))
            first = can_start[p]
        else:
            fin = np.where(esc.cut, close_cost, INF).astype(np.int64)
            short = end <= esc.nc[p]
            inner = short & ~esc.cut[p]
            for _ in range(16):  # an escape is at most 6 bytes, so this settles fast
                val = np.minimum(np.where(is_copy, fin[end], fixed) + 1, INF)
                new = fin.copy()
                np.minimum.at(new, p[inner], val[inner])
                if np.array_equal(new, fin):
                    break
                fin = new
            first = short & esc.cut[p]
        after = np.where(is_copy, fin[end], fixed)
        fo = np.full(self.width, INF, dtype=np.int64)
        np.minimum.at(fo, p[first], np.minimum(after[first] + 1, INF))
        self.fin[j] = fin
        self.specials[j] = RowState(COPY, field=j, pos=np.flatnonzero(fo < INF))
        self.special_cost[j] = int(fo.min())
        body = (self.cbase + j * self.width + p, tok, end, after, out, ~is_copy)
        k0 = np.full(len(c0), self.fmt.n + 1 + j, dtype=np.int64)
        return [body, (k0, c0[:, 0], np.zeros_like(k0), c0_cost, c0[:, 1], k0 >= 0)]

    def _literal_entries(self) -> tuple[np.ndarray, ...]:
        """The tokenizer's literal tables, plus tokens that open a string and copy on."""
        fmt = self.fmt
        extra = [(x, t, c) for x, t, j, rest in fmt.lit_complex
                 if (c := self._resolve((j, rest))) is not None]
        more = np.array(extra, dtype=np.int64).reshape(-1, 3).T
        xs, toks, outs = (np.concatenate([a, b]) for a, b in zip(
            (fmt.lit_x, fmt.lit_tok, fmt.lit_out), more, strict=True))
        return (xs, toks, np.zeros_like(xs), self.costs(outs), outs, np.zeros(len(xs), bool))

    def _pack(self, parts: list[tuple[np.ndarray, ...]]) -> None:
        key, tok, end, cost, out, close = (np.concatenate([pt[i] for pt in parts])
                                           for i in range(6))
        keep = cost < INF  # a token after which the answer cannot be finished is never allowed
        order = np.argsort(key[keep], kind="stable")
        key = key[keep][order]
        self.tok, self.end, self.cost_after = tok[keep][order], end[keep][order], cost[keep][order]
        self.out, self.close = out[keep][order], close[keep][order]
        self.indptr = np.searchsorted(key, np.arange(self.nkeys + 1)).astype(np.int64)


def _span_costs(p: np.ndarray, end: np.ndarray, is_copy: np.ndarray, fixed: np.ndarray,
                fin: np.ndarray) -> np.ndarray:
    """Fewest tokens to finish from each position of a value confined to spans.

    Every entry stays inside one span, so the exact cost is a backward pass over
    the (few) positions that have entries; ``fin`` holds the costs at span ends.
    """
    fin = fin.astype(np.int64)
    for q in np.unique(p)[::-1]:
        at = p == q
        val = np.where(is_copy[at], fin[end[at]], fixed[at]) + 1
        fin[q] = min(int(fin[q]), int(val.min()), INF)
    return fin


@dataclass(frozen=True)
class FieldTrace:
    """Where one decoded value came from and how sure the decoder was of it.

    ``span``: ``[start, end)`` character offsets into the text exactly as given,
    so that ``text[start:end]`` is the value; None for null. Where the value
    occurs more than once, the first occurrence the copy is consistent with (the
    decoder keeps every occurrence alive until the value closes).

    The log-probabilities are of the tokens chosen, each renormalised over the
    tokens the constraint allowed at that step (the scores the decoder picked
    from, the closing bias near the value cap included): ``logp_start`` of the
    token that chose null or opened the string, ``logp_copy`` of each token
    wholly inside the value, ``logp_close`` of the token holding the closing
    quote (0.0 when the opening token closed it too; None for null). A token
    spanning two fields' decisions counts for both.
    """

    span: tuple[int, int] | None
    logp_start: float
    logp_copy: tuple[float, ...] = ()
    logp_close: float | None = None

    @property
    def joint(self) -> float:
        """Product of the probabilities of every decision: shrinks with length."""
        return _prob(self.logp_start + sum(self.logp_copy) + (self.logp_close or 0.0))

    @property
    def copy_mean(self) -> float:
        """Geometric mean of the copied tokens' probabilities (1.0 when none)."""
        return _prob(sum(self.logp_copy) / len(self.logp_copy)) if self.logp_copy else 1.0

    @property
    def confidence(self) -> float:
        """``p(start) * copy_mean * p(close)``; for null, ``p(null)``.

        Wrong fields come from the two boundary decisions (present or absent,
        where the value ends), so those are kept whole; the copied tokens are
        averaged geometrically, so that a long value is not scored lower than a
        short one for its length alone (as :attr:`joint` is), and one threshold
        can serve every field.
        """
        lp = self.logp_start + (self.logp_close or 0.0)
        return _prob(lp) * self.copy_mean

    def as_json(self) -> dict[str, Any]:
        return {"span": list(self.span) if self.span else None, "confidence": self.confidence,
                "joint": self.joint, "p_start": _prob(self.logp_start),
                "copy_mean": self.copy_mean,
                "p_close": None if self.logp_close is None else _prob(self.logp_close)}


def spans_and_confidence(row: dict[str, FieldTrace]) -> dict[str, dict[str, Any]]:
    """``{"spans": {field: [start, end] | None}, "confidence": {field: float}}``."""
    return {"spans": {f: list(t.span) if t.span else None for f, t in row.items()},
            "confidence": {f: t.confidence for f, t in row.items()}}


def _prob(logp: float) -> float:
    return min(1.0, max(0.0, math.exp(logp)))


def answer_layout(fmt: AnswerFormat, data: bytes) -> list[tuple[int, int | None]] | None:
    """Per field, where its slot starts in the answer bytes ``data`` and where
    its closing quote is (None for null); None when ``data`` stops short."""
    out: list[tuple[int, int | None]] = []
    i = prev = 0
    for j, slot in enumerate(sorted(fmt.slot_field)):
        i += slot - prev
        prev = fmt.slot_end[j]
        if i >= len(data):
            return None
        if data[i] != QUOTE:
            out.append((i, None))
            i += 4
            continue
        q = i + 1
        while q < len(data) and data[q] != QUOTE:
            q += 2 if data[q] == 0x5C else 1  # a backslash escapes the next byte
        if q >= len(data):
            return None
        out.append((i, q))
        i = q + 1
    return out


def field_traces(fmt: AnswerFormat, pieces: list[bytes], logps: list[float],
                 spans: dict[int, tuple[int, int]]) -> dict[str, FieldTrace] | None:
    """Per field name, its trace from the chosen tokens' bytes and log-probabilities
    and the values' character spans; None when the answer is incomplete."""
    ends = np.cumsum([len(p) for p in pieces])
    layout = answer_layout(fmt, b"".join(pieces))
    if layout is None:
        return None
    out = {}
    for j, (slot, close) in enumerate(layout):
        first = int(np.searchsorted(ends, slot, side="right"))  # the token holding the byte
        if close is None:
            out[FIELDS[j]] = FieldTrace(None, logps[first])
            continue
        last = int(np.searchsorted(ends, close, side="right"))
        out[FIELDS[j]] = FieldTrace(spans.get(j), logps[first], tuple(logps[first + 1:last]),
                                    logps[last] if last != first else 0.0)
    return out


class CopyLogitsProcessor(LogitsProcessor):
    """Masks one batched greedy ``generate`` call; row i copies from ``texts[i]``.

    The first call records the prompt length; each later call first advances
    every row with the token just generated. Rows that emitted EOS may only
    emit EOS or pad. One processor serves one ``generate`` call. With
    ``trace`` it also keeps, per row, each chosen token's log-probability among
    the allowed ones and each value's span (see :meth:`traces`); the mask is the
    same either way.
    """

    def __init__(self, owner: CopyConstraint, tables: list[RequestTables],
                 budgets: list[int]) -> None:
        self.fmt, self.tb, self.tables = owner.fmt, owner.tb, tables
        self.budgets = np.array(budgets, dtype=np.int64)
        self.cap, self.close_bias = owner.max_value_chars, owner.close_bias
        self.end_ids = sorted({i for i in (owner.eos_id, owner.pad_id) if i is not None})
        counts = [t.nkeys for t in tables]
        self.key_base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        sizes = np.array([len(t.tok) for t in tables], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.indptr = np.concatenate([t.indptr[:-1] + o for t, o in zip(tables, offsets[:-1],
                                                                          strict=True)]
                                     + [offsets[-1:]])
        self.tok, self.end, self.cost, self.out, self.close = (
            np.concatenate([getattr(t, name) for t in tables])
            for name in ("tok", "end", "cost_after", "out", "close"))
        self.states = [RowState(LIT, x=0) for _ in tables]
        self.prompt_len: int | None = None
        self._fed = 0  # length of the input_ids last advanced with
        self._last: tuple[Any, ...] | None = None
        self.trace = owner.trace
        self.chosen: list[list[int]] = [[] for _ in tables]
        self.logps: list[list[float]] = [[] for _ in tables]
        self.spans: list[dict[int, tuple[int, int]]] = [{} for _ in tables]
        self._stamp: np.ndarray | None = None

    def traces(self) -> list[dict[str, FieldTrace] | None]:
        """Per row (the order of ``texts``), per field name, its :class:`FieldTrace`;
        None for a row that did not finish its answer or when not tracing."""
        if not self.trace:
            return [None] * len(self.states)
        return [field_traces(self.fmt, [self.tb.tokens[t] or b"" for t in ids], lps, sp)
                for ids, lps, sp in zip(self.chosen, self.logps, self.spans, strict=True)]

    def _row_keys(self, r: int, st: RowState) -> tuple[np.ndarray, np.ndarray, float]:
        """Keys of row r, the cap limit of each, and the row's closing bias."""
        base, tab = self.key_base[r], self.tables[r]
        if st.kind == LIT:
            return np.array([base + st.x]), np.array([_NO_LIMIT]), 0.0
        assert st.pos is not None
        keys = base + tab.cbase + st.field * tab.width + st.pos
        lims = tab.esc.lim[st.pos - st.copied]
        bias = 0.0
        if st.copied and tab.may_close(st):
            keys = np.append(keys, base + self.fmt.n + 1 + st.field)
            lims = np.append(lims, _NO_LIMIT)
        if self.cap and self.close_bias and st.copied:
            p = int(st.pos[0])
            chars = int(tab.esc.cidx[p] - tab.esc.cidx[p - st.copied])
            bias = self.close_bias * min(1.0, max(0.0, 2.0 * chars / self.cap - 1.0))
        return keys, lims, bias

    def _advance(self, chosen: list[int]) -> None:
        assert self._last is not None
        tok, end, out, bounds, idx, lp = self._last
        picked: list[tuple[int, int]] = []
        for r, st in enumerate(self.states):
            if st.kind == DONE:
                continue
            lo, hi = bounds[r], bounds[r + 1]
            hit = lo + np.flatnonzero(tok[lo:hi] == chosen[r])
            if not len(hit):
                raise RuntimeError(f"row {r}: token {chosen[r]} was not allowed")
            code = int(out[hit[0]])
            if self.trace:
                picked.append((r, int(hit[0])))
                if code >= self.fmt.OPEN or (st.kind == COPY and code != -1):
                    same = hit[out[hit] == code]
                    self._record_spans(r, st, code, idx[same], end[same])
            if code == -1:
                self.states[r] = RowState(COPY, field=st.field, pos=np.unique(end[hit]),
                                          copied=st.copied + int(self.tb.lengths[chosen[r]]))
            elif code <= self.fmt.n:
                self.states[r] = RowState(LIT, x=code)
            elif code == self.fmt.FINISHED:
                self.states[r] = RowState(DONE)
            else:
                self.states[r] = self.tables[r].specials[code - self.fmt.OPEN]
        if picked:
            at = [e for _, e in picked]
            vals = lp[at] if isinstance(lp, np.ndarray) else lp[torch.tensor(at)].tolist()
            for (r, _), v in zip(picked, vals, strict=True):
                self.chosen[r].append(chosen[r])
                self.logps[r].append(float(v))

    def _record_spans(self, r: int, st: RowState, code: int, idx: np.ndarray,
                      end: np.ndarray) -> None:
        """Spans of the values that row r's chosen token closes: its entries ``idx``
        (global) with content ends ``end``, leaving state ``st`` with ``code``."""
        tab, found = self.tables[r], []
        if st.kind == COPY and code != -1:
            assert st.pos is not None
            local = np.searchsorted(self.indptr, idx, side="right") - 1 - self.key_base[r]
            if local[0] < tab.cbase:  # the token starts with the closing quote
                ends = st.pos
                if (spans := tab.spans[st.field]) is not None:
                    ends = ends[spans[2][ends]]
                found.append((st.field, int(ends[0]) - st.copied, int(ends[0])))
            else:  # copies up to the closing quote: one entry per occurrence
                k = int(np.argmin(end))
                p = int(local[k] - tab.cbase - st.field * tab.width)
                found.append((st.field, p - st.copied, int(end[k])))
        if code >= self.fmt.OPEN:
            found += tab.specials[code - self.fmt.OPEN].closed
        for j, a, b in found:
            self.spans[r][j] = (tab.esc.source_offset(a), tab.esc.source_offset(b))

    def _logprobs(self, masked: torch.Tensor, erow: np.ndarray, tok: np.ndarray,
                  bounds: np.ndarray) -> Any:
        """Log-probability of each allowed entry within its row's allowed tokens,
        from the masked scores: numpy on CPU (only the allowed entries are read),
        torch elsewhere (the device does the whole row)."""
        if masked.device.type != "cpu" or masked.dtype not in (torch.float32, torch.float64):
            rows, toks = (torch.from_numpy(a).to(masked.device) for a in (erow, tok))
            lse = torch.logsumexp(masked.float(), dim=-1)
            return masked[rows, toks].float() - lse[rows]
        if not len(tok):
            return np.zeros(0)
        vals = masked.numpy()[erow, tok].astype(np.float64)
        if self._stamp is None or self._stamp.shape != masked.shape:
            self._stamp = np.empty(masked.shape, dtype=np.int64)
        n = np.arange(len(tok))
        self._stamp[erow, tok] = n  # a token allowed under several keys counts once
        once = np.where(self._stamp[erow, tok] == n, vals, -np.inf)
        lo = bounds[:-1][bounds[:-1] < bounds[1:]]
        width = np.diff(np.append(lo, len(tok)))
        top = np.repeat(np.maximum.reduceat(once, lo), width)
        lse = top + np.log(np.repeat(np.add.reduceat(np.exp(once - top), lo), width))
        return vals - lse

    def _catch_up(self, input_ids: torch.LongTensor, width: int) -> None:
        """Advance every row with the newest token of ``input_ids`` unless done already
        for this length; the first call records the prompt length instead."""
        if self.prompt_len is None:
            self.prompt_len = self._fed = int(input_ids.shape[1])
            # ids the model cannot score (tokenizer wider than the model) are never allowed
            self.cost = np.where(self.tok < width, self.cost, INF)
        elif int(input_ids.shape[1]) > self._fed:
            self._advance(input_ids[:, -1].tolist())
            self._fed = int(input_ids.shape[1])

    def _allowed(self, input_ids: torch.LongTensor) -> tuple[np.ndarray, ...]:
        """``(erow, idx, bounds, bias)`` of the tokens allowed next."""
        rem = self.budgets - (int(input_ids.shape[1]) - self.prompt_len)  # type: ignore[operator]
        rows = [(r, *self._row_keys(r, st)) for r, st in enumerate(self.states)
                if st.kind != DONE]
        bias = np.zeros(len(self.states))
        bias[[r for r, *_ in rows]] = [b for *_, b in rows]
        erow, idx = self._gather(rows, rem)
        bounds = np.searchsorted(erow, np.arange(len(self.states) + 1))
        return erow, idx, bounds, bias

    def only_choice(self, input_ids: torch.LongTensor, width: int) -> int | None:
        """For a one-row processor: advance with the newest token of ``input_ids``
        (as :meth:`__call__` does), then return the one token allowed next when
        exactly one is, recording it as chosen among one (log-probability 0, as
        masked scores would give); None when the row may choose among several or
        is done, and then the next :meth:`__call__` with the same ``input_ids``
        does not advance again. ``width`` is the model's logits width.

        A forced token needs no scores: jump-forward decoding feeds runs of them
        to the model in one pass (inference.continuous).
        """
        self._catch_up(input_ids, width)
        if self.states[0].kind == DONE:
            return None
        erow, idx, bounds, _ = self._allowed(input_ids)
        tok = self.tok[idx]
        if not len(tok) or (tok != tok[0]).any():
            return None
        lp = np.zeros(len(tok)) if self.trace else None
        self._last = (tok, self.end[idx], self.out[idx], bounds, idx, lp)
        return int(tok[0])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        self._catch_up(input_ids, int(scores.shape[-1]))
        erow, idx, bounds, bias = self._allowed(input_ids)
        tok = self.tok[idx]
        lift = bias[erow] * self.close[idx]  # favour closing as a value nears the cap
        done = [r for r, st in enumerate(self.states) if st.kind == DONE]
        masked = self._apply(scores, erow, tok, lift, done)
        lp = self._logprobs(masked, erow, tok, bounds) if self.trace else None
        self._last = (tok, self.end[idx], self.out[idx], bounds, idx, lp)
        return masked

    def _apply(self, scores: torch.Tensor, erow: np.ndarray, tok: np.ndarray,
               lift: np.ndarray, done: list[int]) -> torch.Tensor:
        """Scores of the allowed tokens (plus ``lift``), -inf elsewhere; finished rows
        keep EOS and pad. On CPU numpy does it: one thread, no OpenMP spin-up."""
        ends = np.array(self.end_ids, dtype=np.int64)
        d_row, d_tok = np.repeat(done, len(ends)).astype(np.int64), np.tile(ends, len(done))
        if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
            src = scores.detach().numpy()
            out = np.full_like(src, -np.inf)
            out[erow, tok] = src[erow, tok] + lift
            out[d_row, d_tok] = src[d_row, d_tok]
            return torch.from_numpy(out)
        rows, toks = (torch.from_numpy(np.concatenate(a)).to(scores.device)
                      for a in ((erow, d_row), (tok, d_tok)))
        vals = scores[rows, toks] + torch.from_numpy(np.concatenate(
            [lift, np.zeros(len(d_row))])).to(scores.device, scores.dtype)
        masked = torch.full_like(scores, float("-inf"))
        masked[rows, toks] = vals
        return masked

    def _gather(self, rows: list[tuple[int, np.ndarray, np.ndarray, float]],
                rem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, entry index) of every allowed token: the rows' keys' CSR slices,
        less tokens past the cap or after which the budget left cannot finish."""
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        keys = np.concatenate([k for _, k, _, _ in rows])
        krow = np.concatenate([np.full(len(k), r) for r, k, _, _ in rows])
        klim = np.concatenate([lim for _, _, lim, _ in rows])
        starts = self.indptr[keys]
        counts = self.indptr[keys + 1] - starts
        rep = np.repeat(np.arange(len(keys)), counts)
        idx = starts[rep] + np.arange(len(rep)) - np.repeat(np.cumsum(counts) - counts, counts)
        erow = krow[rep]
        keep = (self.end[idx] <= klim[rep]) & (self.cost[idx] < rem[erow])
        return erow[keep], idx[keep]


class CopyConstraint:
    """Copy-constrained decoding for one tokenizer; build once, reuse per request.

    ``max_value_chars`` caps each value (characters of the decoded value). With a
    cap, closing tokens get a logit bonus rising linearly from 0 at half the cap to
    ``close_bias`` at the cap, so the model prefers to end long values itself.
    With ``email_spans`` the email value is ``null`` or one whole e-mail address
    of the input (:data:`inference.vocab.EMAIL_RE`, full-width ones too), never a
    phone number, a word such as "无" or part of an address. With ``trace`` each
    processor keeps every value's span and confidence (:class:`FieldTrace`).
    """

    def __init__(self, tokenizer: Any, token_bytes: TokenBytes | None = None,
                 max_value_chars: int | None = None, close_bias: float = 4.0,
                 eos_token_id: int | None = None, email_spans: bool = False,
                 trace: bool = True) -> None:
        self.tb = token_bytes if token_bytes is not None else TokenBytes(tokenizer)
        self.eos_id = int(tokenizer.eos_token_id if eos_token_id is None else eos_token_id)
        self.pad_id = tokenizer.pad_token_id
        self.max_value_chars = max_value_chars
        self.close_bias = close_bias
        self.email_spans = email_spans
        self.trace = trace
        self.fmt = AnswerFormat(self.tb, self.eos_id)

    def min_tokens(self) -> int:
        """Fewest tokens the all-null answer needs, EOS included."""
        return int(self.fmt.min_cost[0])

    def logits_processor(self, texts: list[str],
                         max_new_tokens: list[int] | int) -> CopyLogitsProcessor:
        """A processor for one batch; ``max_new_tokens`` is each row's budget
        (EOS included) and must be at least :meth:`min_tokens`."""
        budgets = ([max_new_tokens] * len(texts) if isinstance(max_new_tokens, int)
                   else list(max_new_tokens))
        if len(budgets) != len(texts):
            raise ValueError("one budget per text")
        if budgets and min(budgets) < self.min_tokens():
            raise ValueError(f"a budget below {self.min_tokens()} tokens cannot fit the answer")
        tables = [RequestTables(self.fmt, self.tb, t, self.max_value_chars, self.email_spans)
                  for t in texts]
        return CopyLogitsProcessor(self, tables, budgets)


def bench_mask(tokenizer: Any, texts: list[str], steps: int = 64, seed: int = 0,
               constraint: CopyConstraint | None = None,
               trace: bool = True) -> dict[str, float]:
    """Time the processor alone on a batch of ``texts`` with random logits.

    Random logits pick among the allowed tokens; inside a value, tokens holding a
    quote are made unlikely so values run long, as a copying model's do. Finished
    batches restart. Returns ``mask_ms_per_step``, ``build_ms_per_request``
    (tables), ``setup_s`` (TokenBytes and format tables, once per tokenizer) and
    ``copy_share`` (fraction of row-steps spent inside a value).
    """
    t0 = time.perf_counter()
    cc = constraint if constraint is not None else CopyConstraint(tokenizer, trace=trace)
    setup = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    quoted = torch.tensor([b is not None and b'"' in b for b in cc.tb.tokens])
    spent = build = share = 0.0
    builds = 0
    proc: Any = None  # built on the first step and again when every row is done
    ids = torch.zeros(len(texts), 1, dtype=torch.long)
    for _ in range(steps):
        if proc is None or all(st.kind == DONE for st in proc.states):
            t0 = time.perf_counter()
            proc = cc.logits_processor(texts, 4 * max(map(len, texts)) + 64)
            build += time.perf_counter() - t0
            builds += 1
            ids = ids[:, :1]
        copying = torch.tensor([st.kind == COPY for st in proc.states])
        share += float(copying.float().mean())
        logits = torch.randn(len(texts), len(quoted), generator=gen)
        logits -= 3.0 * (copying[:, None] & quoted[None, :])
        t0 = time.perf_counter()
        out = proc(ids, logits)
        spent += time.perf_counter() - t0
        ids = torch.cat([ids, out.argmax(-1)[:, None]], dim=1)
    return {"mask_ms_per_step": 1e3 * spent / steps, "setup_s": setup,
            "build_ms_per_request": 1e3 * build / (builds * len(texts)),
            "copy_share": share / steps}
