"""Continuous batching with jump-forward for copy-constrained decoding.

A static batch (``generate``) carries every row until the longest answer ends:
with answers of 45 to 210 tokens, a third of its row-steps belong to rows that
are done already. :class:`ContinuousDecoder` keeps its own running set instead:

- **Rows leave** as soon as their answer is closed (EOS chosen), and
  ``on_done`` hears of them at once; their cache slot goes to the next request.
- **Rows join** at the next step: each new request gets a free slot, the shared
  system turn's keys and values copied in (computed once per model and
  adapter), and the rest of its prompt prefilled in chunks of
  ``prefill_chunk`` tokens, in a forward pass of its own between decode steps,
  so a long prompt never stalls the others for long.
- **Jump-forward**: when the copy automaton allows exactly one next token
  (``CopyLogitsProcessor.only_choice``), it needs no scores, and neither do
  the ones it forces after it. Such a run is fed to the model in one pass as a
  short prefill instead of one step each. Outputs are the tokens that greedy
  step-by-step decoding chooses, since every skipped choice had one candidate.

The cache is one buffer per layer, ``[slots, kv_heads, capacity, head_dim]``.
Decoding rows hold slots ``0..n_dec-1`` and prefilling rows the slots after
them, so each forward pass sees a contiguous slice (a view, no copy). Every row
writes at its own column and attends through an explicit 4-D mask, so rows of
any length share a pass without shifting anyone's cache; a row that leaves is
replaced by the last one (one row's cache copied). Rows in one pass that feed
different numbers of tokens are left-padded to the longest, and padding is
masked out and overwritten later.

Jump-forward pads the rows that have fewer forced tokens. On a GPU a pass costs
about the same for 1 or 16 tokens a row, and jumping saves whole steps; on a
CPU every padded token is computed, so a pass feeds a longer run only when the
tokens it adds outweigh the padding plus ``step_cost_tokens``, the fixed cost
of one pass in tokens' worth of compute (see :meth:`ContinuousDecoder._width`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache

from inference.copydecode import CopyConstraint, CopyLogitsProcessor
from inference.vocab import DONE

#: A forward pass's fixed cost on a CPU, in tokens' worth of compute. On a 2-core
#: AVX2 CPU, 16 texts decoded in 46.6 s without jumps and in 50.6 to 56.6 s with
#: fixed costs of 4, 16, 64 and unbounded (docs/benchmarks.md): a padded position
#: costs as much as a real one there, so at 0 a CPU pass jumps only when no row
#: pads, which in practice is never. On a GPU a pass costs about the same for one
#: token a row or sixteen, so jumps are always taken there.
CPU_STEP_COST_TOKENS = 0.0
GPU_STEP_COST_TOKENS = 1e6


@dataclass
class Row:
    """One request in the running set."""

    key: Any                      # the caller's handle for it
    ids: list[int]                # prompt token ids
    budget: int                   # new tokens, EOS included
    proc: CopyLogitsProcessor     # one-row copy constraint
    #: Next cache column, and the next position id: every column below it holds one
    #: of the row's tokens (the prompt's first, then the answer's), in order.
    col: int = 0
    out: list[int] = field(default_factory=list)  # tokens chosen so far
    pending: list[int] = field(default_factory=list)  # chosen, not yet in the cache

    def history(self) -> Any:
        """Ids as the one-row processor counts them: a one-token "prompt", then the
        answer so far (its length gives the budget left, its end the last choice)."""
        return torch.tensor([[0, *self.out]])


@dataclass
class LoopStats:
    """What a run did, to see where the time goes."""

    decode_passes: int = 0        # forward passes over decoding rows
    prefill_passes: int = 0
    row_steps: int = 0            # rows in decode passes, summed
    tokens: int = 0               # answer tokens chosen
    forced: int = 0               # of them, forced (no scores needed)
    jumped: int = 0               # forced tokens fed after another in the same pass
    padded: int = 0               # padding tokens computed in decode passes
    prefill_tokens: int = 0
    prefill_padded: int = 0
    static_row_steps: int = 0     # what one static batch of the same rows would carry
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        steps = self.tokens  # row-steps of step-by-step decoding with rows leaving
        d["early_exit_saved"] = (1 - steps / self.static_row_steps
                                 if self.static_row_steps else 0.0)
        d["jump_saved"] = self.jumped / steps if steps else 0.0
        return d


class _SlotCache(Cache):  # type: ignore[misc]
    """The cache a forward pass sees: slots ``a..b-1`` of the buffers, each row
    writing its new keys/values at its own columns ``cols``, attending over
    ``kv_len`` columns."""

    def __init__(self, owner: _Buffers, a: int, b: int, cols: torch.Tensor,
                 kv_len: int) -> None:
        super().__init__(layers=[])
        self.owner, self.a, self.b, self.cols, self.kv_len = owner, a, b, cols, kv_len
        self.rows = torch.arange(b - a, device=cols.device)[:, None]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.owner.layer(layer_idx, key_states)
        k, v = keys[self.a:self.b], values[self.a:self.b]
        k[self.rows, :, self.cols] = key_states.transpose(1, 2)
        v[self.rows, :, self.cols] = value_states.transpose(1, 2)
        return k[:, :, :self.kv_len], v[:, :, :self.kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.kv_len


class _Buffers:
    """Per-layer key and value buffers ``[slots, kv_heads, capacity, head_dim]``,
    made on first use, grown (copied) when a row needs more columns."""

    def __init__(self, n_layers: int, slots: int, device: Any) -> None:
        self.n_layers, self.slots, self.device = n_layers, slots, device
        self.capacity = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.valid = torch.zeros((slots, 0), dtype=torch.bool, device=device)

    def reserve(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        capacity = max(capacity, int(self.capacity * 1.25))
        for store in (self.keys, self.values):
            for j, buf in enumerate(store):
                if buf is not None:
                    new = buf.new_zeros((*buf.shape[:2], capacity, buf.shape[3]))
                    new[:, :, :self.capacity] = buf
                    store[j] = new
        valid = torch.zeros((self.slots, capacity), dtype=torch.bool, device=self.device)
        valid[:, :self.capacity] = self.valid
        self.valid, self.capacity = valid, capacity

    def layer(self, j: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[j], self.values[j]
        if keys is None or values is None:
            shape = (self.slots, like.shape[1], self.capacity, like.shape[3])
            keys = self.keys[j] = like.new_zeros(shape)
            values = self.values[j] = like.new_zeros(shape)
        return keys, values

    def move(self, src: int, dst: int, cols: int) -> None:
        """Slot ``src``'s first ``cols`` columns (and validity) into slot ``dst``."""
        if src == dst:
            return
        for store in (self.keys, self.values):
            for buf in store:
                if buf is not None:
                    buf[dst, :, :cols] = buf[src, :, :cols]
        self.valid[dst] = False
        self.valid[dst, :cols] = self.valid[src, :cols]

    def put_prefix(self, slot: int, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The shared prefix's keys/values (each ``[1, kv_heads, P, head_dim]``) into a slot."""
        n = layers[0][0].shape[2]
        for j, (k, v) in enumerate(layers):
            keys, values = self.layer(j, k)
            keys[slot, :, :n] = k[0]
            values[slot, :, :n] = v[0]
        self.valid[slot] = False
        self.valid[slot, :n] = True


class ContinuousDecoder:
    """Copy-constrained greedy decoding with a running set (see the module's doc).

    ``model`` is a causal LM whose layers all use full attention (checked by
    :meth:`supports`); ``prompts`` turn a text into prompt token ids.
    """

    def __init__(self, model: Any, constraint: CopyConstraint, pad_id: int,
                 max_running: int = 16, prefill_chunk: int = 128,
                 prefill_tokens: int = 1024, jump_forward: bool = True,
                 max_jump: int = 32, step_cost_tokens: float | None = None,
                 prefix: Callable[[tuple[int, ...]], Any] | None = None) -> None:
        self.model, self.constraint, self.pad_id = model, constraint, pad_id
        self.max_running = max(1, max_running)
        self.prefill_chunk, self.prefill_tokens = max(1, prefill_chunk), prefill_tokens
        self.jump_forward, self.max_jump = jump_forward, max(1, max_jump)
        self.device = next(model.parameters()).device
        self.step_cost_tokens = step_cost_tokens
        self.prefix = prefix  # prefix ids -> its layers (inference.prefill), or None
        config = model.config
        self.width = int(model.get_output_embeddings().weight.shape[0])
        self.n_layers = int(config.num_hidden_layers)
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                          torch.float32)
        self.stats = LoopStats()

    @staticmethod
    def supports(model: Any) -> bool:
        """Only plain full-attention caches are laid out by hand (as for the prefill)."""
        from inference.prefill import Prefiller

        return Prefiller.supports(model)

    # --- the loop ----------------------------------------------------------
    def run(self, items: Iterable[tuple[Any, str, list[int], int]],
            on_done: Callable[[Any, list[int], CopyLogitsProcessor], None],
            source: Callable[[], list[tuple[Any, str, list[int], int]]] | None = None,
            prefix_len: int = 0) -> LoopStats:
        """Decode every ``(key, text, prompt_ids, budget)``; ``on_done(key, answer_ids,
        processor)`` is called as each row's answer closes. ``source``, when given,
        is asked for more requests before every pass that has a free row and
        nothing waiting; they join the running set.
        The first ``prefix_len`` prompt ids, when shared by a row, come from the
        prefix cache instead of being prefilled."""
        start = time.perf_counter()
        self.stats = stats = LoopStats()
        waiting: deque[tuple[Any, str, list[int], int]] = deque(items)
        slots = self.max_running + 1  # one spare, for swaps
        buf = _Buffers(self.n_layers, slots, self.device)
        dec: list[Row] = []   # slots 0..len(dec)-1
        pre: list[Row] = []   # the slots after them
        lengths: list[int] = []
        with torch.inference_mode():
            while True:
                if source is not None and not waiting and len(dec) + len(pre) < self.max_running:
                    waiting.extend(source())
                while waiting and len(dec) + len(pre) < self.max_running:
                    key, text, ids, budget = waiting.popleft()
                    pre.append(self._admit(key, text, ids, budget, buf, len(dec) + len(pre),
                                           prefix_len))
                if not dec and not pre:
                    break
                if pre:
                    for row in self._prefill(pre, len(dec), buf):
                        self._swap_into(buf, dec, pre, row)
                if dec:
                    self._decode(dec, buf)
                for row in [r for r in dec if r.proc.states[0].kind == DONE]:
                    lengths.append(len(row.out))
                    self._leave(buf, dec, pre, row)
                    on_done(row.key, row.out, row.proc)
        stats.static_row_steps = len(lengths) * max(lengths, default=0)
        stats.seconds = time.perf_counter() - start
        return stats

    def _admit(self, key: Any, text: str, ids: list[int], budget: int, buf: _Buffers,
               slot: int, prefix_len: int) -> Row:
        floor = self.constraint.min_tokens()
        budget = max(budget, floor)
        proc = self.constraint.logits_processor([text], [budget])
        row = Row(key, ids, budget, proc)
        buf.reserve(len(ids) + budget + self.max_jump + self.prefill_chunk + 1)
        n = prefix_len if self.prefix is not None and 0 < prefix_len < len(ids) else 0
        if n:
            buf.put_prefix(slot, self.prefix(tuple(ids[:n])))  # type: ignore[misc]
        else:
            buf.valid[slot] = False
        row.col = n
        return row

    def _swap_into(self, buf: _Buffers, dec: list[Row], pre: list[Row], row: Row) -> None:
        """Move prefilled ``row`` from the prefill region to the end of the decode region."""
        first, i = len(dec), pre.index(row)  # slot len(dec) is the first prefill slot
        if i:
            spare, other = buf.slots - 1, pre[0]
            buf.move(first, spare, other.col)
            buf.move(first + i, first, row.col)
            buf.move(spare, first + i, other.col)
            pre[i], pre[0] = other, row
        pre.pop(0)
        dec.append(row)

    def _leave(self, buf: _Buffers, dec: list[Row], pre: list[Row], row: Row) -> None:
        """Free ``row``'s slot: the last decoding row fills it, and the last prefilling
        row the slot that frees."""
        s, last = dec.index(row), len(dec) - 1
        if s != last:
            buf.move(last, s, dec[last].col)
            dec[s] = dec[last]
        dec.pop()
        if pre:
            buf.move(len(dec) + len(pre), len(dec), pre[-1].col)
            pre.insert(0, pre.pop())

    # --- passes ------------------------------------------------------------
    def _forward(self, a: int, feeds: list[list[int]], rows: list[Row], buf: _Buffers,
                 ) -> torch.Tensor:
        """One pass over slots ``a..a+len(rows)-1``, row i feeding ``feeds[i]``
        (left-padded to the longest); the logits at each row's last fed token."""
        q = max(len(f) for f in feeds)
        n = len(rows)
        ids = torch.full((n, q), self.pad_id, dtype=torch.long)
        cols = torch.empty((n, q), dtype=torch.long)
        pos = torch.zeros((n, q), dtype=torch.long)
        for i, (row, f) in enumerate(zip(rows, feeds, strict=True)):
            m = len(f)
            ids[i, q - m:] = torch.tensor(f)
            cols[i, q - m:] = torch.arange(row.col, row.col + m)
            cols[i, :q - m] = torch.arange(row.col + m, row.col + q)  # padding, masked
            pos[i, q - m:] = cols[i, q - m:]
        ids, cols, pos = ids.to(self.device), cols.to(self.device), pos.to(self.device)
        valid = buf.valid[a:a + n]
        for i, (row, f) in enumerate(zip(rows, feeds, strict=True)):
            valid[i, row.col:row.col + len(f)] = True
        kv_len = int(cols.max()) + 1
        seen = valid[:, :kv_len]
        causal = torch.arange(kv_len, device=self.device)[None, None, :] <= cols[:, :, None]
        allow = seen[:, None, :] & causal                        # [n, q, kv_len]
        dtype = self.dtype
        mask = torch.zeros(allow.shape, dtype=dtype, device=self.device)
        mask.masked_fill_(~allow, torch.finfo(dtype).min)
        cache = _SlotCache(buf, a, a + n, cols, kv_len)
        out = self.model(input_ids=ids, attention_mask=mask[:, None], position_ids=pos,
                         cache=cache, use_cache=True, logits_to_keep=1)
        for row, f in zip(rows, feeds, strict=True):
            row.col += len(f)
        return out.logits[:, -1, :]

    def _prefill(self, pre: list[Row], a_dec: int, buf: _Buffers) -> list[Row]:
        """One chunked prefill pass over the first prefilling rows; returns those whose
        prompt is now in the cache, their first answer token chosen."""
        take: list[Row] = []
        budget = self.prefill_tokens
        for row in pre:
            need = min(self.prefill_chunk, len(row.ids) - row.col)
            if take and need > budget:
                break
            take.append(row)
            budget -= need
        feeds = [row.ids[row.col:row.col + self.prefill_chunk] for row in take]
        logits = self._forward(a_dec, feeds, take, buf)
        self.stats.prefill_passes += 1
        width = max(len(f) for f in feeds)
        self.stats.prefill_tokens += sum(len(f) for f in feeds)
        self.stats.prefill_padded += sum(width - len(f) for f in feeds)
        done = []
        for i, row in enumerate(take):
            if row.col == len(row.ids):  # the whole prompt is in the cache
                self._choose(row, logits[i:i + 1])
                done.append(row)
        return done

    def _decode(self, dec: list[Row], buf: _Buffers) -> None:
        """One decode pass: every row feeds its pending tokens (a forced run, up to the
        pass's width); rows whose pending tokens are all in afterwards choose the next."""
        widths = [len(r.pending) for r in dec]
        q = self._width(widths)
        feeds = [r.pending[:q] for r in dec]
        logits = self._forward(0, feeds, dec, buf)
        st = self.stats
        st.decode_passes += 1
        st.row_steps += len(dec)
        width = max(len(f) for f in feeds)
        st.padded += sum(width - len(f) for f in feeds)
        st.jumped += sum(len(f) - 1 for f in feeds)
        for i, (row, f) in enumerate(zip(dec, feeds, strict=True)):
            row.pending = row.pending[len(f):]
            if not row.pending and row.proc.states[0].kind != DONE:
                self._choose(row, logits[i:i + 1])

    def _width(self, widths: list[int]) -> int:
        """How many pending tokens a pass feeds per row: 1 without jump-forward; else
        the width that computes the most fed tokens per token of compute, a pass
        costing ``step_cost_tokens`` plus one token per row and position."""
        if not self.jump_forward:
            return 1
        n = len(widths)
        best, best_q = 0.0, 1
        for q in sorted(set(min(w, self.max_jump) for w in widths)):
            useful = sum(min(w, q) for w in widths)
            rate = useful / (n * q + self._step_cost())
            if rate > best + 1e-12:
                best, best_q = rate, q
        return best_q

    def _step_cost(self) -> float:
        if self.step_cost_tokens is not None:
            return self.step_cost_tokens
        return CPU_STEP_COST_TOKENS if self.device.type == "cpu" else GPU_STEP_COST_TOKENS

    def _choose(self, row: Row, logits: torch.Tensor) -> None:
        """The row's next token from ``logits`` (one row; float32, as ``generate``
        scores), then every token the automaton forces after it, EOS included;
        all of them become pending (EOS is never fed: the row is done)."""
        masked = row.proc(row.history(), logits.float())  # type: ignore[arg-type]
        self._take(row, int(masked.argmax(-1)[0]), forced=False)
        while (nxt := row.proc.only_choice(row.history(), self.width)) is not None:
            self._take(row, nxt, forced=True)

    def _take(self, row: Row, token: int, forced: bool) -> None:
        row.out.append(token)
        row.pending.append(token)
        self.stats.tokens += 1
        self.stats.forced += forced
