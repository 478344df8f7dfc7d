"""The frozen prefix: hidden states below the first LoRA layer, computed once per row.

With LoRA on the top layers only (``--layers 18-29`` of 30), the layers below
the first adapted one have no trainable weight and, without dropout, give the
same output for a row at every epoch. Training normally recomputes them at
every step; here each training row's hidden state at the input of the first
LoRA layer is computed once, kept on the CPU in the model's dtype, and each
step runs only the layers from there up. The loss, the gradients and the
adapter are the same as without the cache (a test checks it); the forward pass
of the frozen layers is no longer paid at every step.

The cache is used only where it is exact: LoRA starts above layer 0, the model
has no dropout of its own and one kind of layer, and a check on the first
batch finds the short path equal to the full one. Otherwise training runs the
full model, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.records import Example

log = logging.getLogger(__name__)

#: Batch keys of the cached hidden states and of the layer they enter; answer_loss
#: starts from them when present.
KEY, START = "prefix_hidden", "prefix_start"

#: Config attributes that put dropout in the frozen layers.
_DROPOUTS = ("attention_dropout", "hidden_dropout", "hidden_dropout_prob", "dropout",
             "resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_probs_dropout_prob")


@dataclass
class PrefixCache:
    """Hidden states entering layer ``start``, one ``[tokens, hidden]`` tensor per row."""

    start: int
    states: list[Any] = field(default_factory=list)
    build_s: float = 0.0

    def row(self, i: int) -> dict[str, Any]:
        """The batch keys of row ``i``, added to its ``input_ids`` and ``labels``."""
        return {KEY: self.states[i], START: self.start}

    @property
    def megabytes(self) -> float:
        return sum(s.numel() * s.element_size() for s in self.states) / 2**20


class _Stop(Exception):
    """Raised by the capture hook: nothing above the captured layer needs to run."""


def _decoder(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


def why_not(model: Any, layers: Sequence[int] | None) -> str | None:
    """Why the frozen prefix of ``model`` with LoRA on ``layers`` can't be cached, or None."""
    if not layers or min(layers) == 0:
        return "LoRA starts at layer 0"
    decoder = _decoder(model)
    if not hasattr(decoder, "layers"):
        return f"{type(decoder).__name__} has no .layers"
    config = model.config
    drops = {k: getattr(config, k) for k in _DROPOUTS
             if isinstance(getattr(config, k, None), float) and getattr(config, k) > 0}
    if drops:
        return f"the model has dropout {drops}"
    # Some decoders pick each layer's attention mask by its index in the loop; with
    # mixed kinds (sliding and full) a loop that starts part-way would pick wrongly.
    kinds = set(getattr(config, "layer_types", None) or [])
    return f"the model mixes layer types {sorted(kinds)}" if len(kinds) > 1 else None


@contextmanager
def layers_from(decoder: Any, start: int) -> Iterator[None]:
    """Within the block, ``decoder`` runs only its layers ``start`` and up."""
    import torch

    full = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(full)[start:])
    try:
        yield
    finally:
        decoder.layers = full


def capture(model: Any, batch: dict[str, Any], start: int) -> Any:
    """The hidden states entering layer ``start`` for a padded batch (no gradient)."""
    import torch

    decoder = _decoder(model)
    seen: list[Any] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    handle = decoder.layers[start].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"layer {start} never ran: the decoder does not loop over .layers")
    return seen[0]


def top_hidden(model: Any, batch: dict[str, Any]) -> Any:
    """The decoder's last hidden state: from the cached prefix when the batch has one."""
    decoder = _decoder(model)
    if KEY not in batch:
        return decoder(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).last_hidden_state
    with layers_from(decoder, int(batch[START])):
        return decoder(inputs_embeds=batch[KEY],
                       attention_mask=batch["attention_mask"]).last_hidden_state


def build(model: Any, examples: Sequence[Example], start: int, collate: Any, device: str,
          batch_size: int = 16, progress: bool = True) -> PrefixCache | None:
    """The prefix cache of ``examples``, or None where the short path is not exact.

    Rows go through in length order (little padding); each row keeps only its
    own tokens. The first batch is also run through the whole model and through
    the short path from its cached states; a difference means this architecture
    does not run its layers as a plain stack, and the cache is not used.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    states: list[Any] = [None] * len(examples)
    try:
        bar = tqdm(range(0, len(order), batch_size), desc=f"frozen layers 0-{start - 1}",
                   unit="batch", disable=not progress)
        for k in bar:
            idx = order[k: k + batch_size]
            rows = [{"input_ids": examples[i].input_ids, "labels": examples[i].labels}
                    for i in idx]
            batch = {n: t.to(device) for n, t in collate(rows).items()}
            hidden = capture(model, batch, start)
            if k == 0 and not _short_path_is_exact(model, batch, hidden, start):
                return None
            for j, i in enumerate(idx):
                states[i] = hidden[j, : len(examples[i].input_ids)].to("cpu", copy=True)
    finally:
        model.train(was_training)
    cache = PrefixCache(start, states, time.perf_counter() - t0)
    log.info("frozen prefix: layers 0-%d of %d rows cached in %.1f s (%.0f MB)",
             start - 1, len(states), cache.build_s, cache.megabytes)
    return cache


def _short_path_is_exact(model: Any, batch: dict[str, Any], hidden: Any, start: int) -> bool:
    import torch

    with torch.no_grad():
        full = top_hidden(model, batch)
        short = top_hidden(model, {**batch, KEY: hidden, START: start})
    real = batch["attention_mask"].bool()
    diff = (full[real].float() - short[real].float()).abs().max().item()
    scale = full[real].float().abs().max().item()
    if diff > 1e-3 * max(scale, 1.0):
        log.warning("frozen prefix not cached: the short path differs from the full model "
                    "by %.3g (scale %.3g); training runs the whole model", diff, scale)
        return False
    return True
