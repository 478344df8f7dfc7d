"""The synthetic complaint generator: Faker zh_CN contacts, hand-written complaint
sentences (trainer.banks), varied layouts, missing fields and distractors.

One module per layout family, each registered by name in :data:`FAMILIES`:

- ``default`` (trainer.synth.default): labelled, unlabelled and inline texts;
- ``plain`` (trainer.synth.plain): the seed tutorial's one layout, a baseline;
- ``extended`` (trainer.synth.extended): e-mail, narrative, contact-last and
  ticket-form layouts (one module each, banks in trainer.banks_extra), with
  injection sentences, for about 40% of the texts when :class:`SynthConfig`
  asks for them.

The question is the whole complaint, in every layout: 2 to 6 sentences with the
problem, maybe its history (dates, order and ticket numbers inside the sentences),
maybe a sentence with half-width quotes or backslashes, a request and a polite
closing. Section labels, subject lines, greetings and contact details around it
are never part of it, nor are the status rows, closings on lines of their own,
contact sentences and table cells that some extended texts put after it
(trainer.synth.after).

Every record is checked: each non-null gold value occurs verbatim in the text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from trainer.records import Record, record_problems
from trainer.synth.common import MAX_SENTENCES, faker
from trainer.synth.config import SynthConfig
from trainer.synth.default import PLAIN, synth_one
from trainer.synth.extended import (
    BOUNDARY_TAGS,
    EXTENDED_LAYOUTS,
    EXTENDED_SHARE,
    EXTENDED_TAGS,
    LAYOUTS,
    extended_one,
)
from trainer.synth.plain import plain_one

__all__ = [
    "BOUNDARY_TAGS", "EXTENDED_LAYOUTS", "EXTENDED_TAGS", "FAMILIES", "LAYOUTS", "MAX_SENTENCES",
    "PLAIN", "SynthConfig", "generate", "synth_records",
]

#: One record of a family from ``(rng, faker, config)``, or None to draw again.
Family = Callable[[random.Random, Any, SynthConfig], Record | None]

#: Every layout family by name.
FAMILIES: dict[str, Family] = {
    "default": synth_one,
    "plain": plain_one,
    "extended": extended_one,
}


def generate(n: int, config: SynthConfig) -> list[Record]:
    """``n`` synthetic records, identical for the same ``n`` and config.

    Every record is checked: each non-null gold value occurs verbatim in the text,
    and the question span contains no other gold value.
    """
    rng = random.Random(config.seed)
    fake = faker(config.seed)
    # The extended layouts draw from a stream of their own: the default path's draws,
    # and so its output for every seed, are the same as without them.
    xrng = random.Random(f"extended:{config.seed}") if config.extended else None
    base = FAMILIES[config.family]
    out: list[Record] = []
    while len(out) < n:
        if xrng is not None and xrng.random() < EXTENDED_SHARE:
            record = FAMILIES["extended"](xrng, fake, config)
        else:
            record = base(rng, fake, config)
        if record is None:
            continue
        problems = record_problems(record)
        assert not problems, f"synthetic record is invalid: {problems} in {record.text!r}"
        out.append(record)
    return out


def synth_records(n: int, seed: int, plain: bool = False, extended: bool = False,
                  rare_names: bool = False, unlabelled: float | None = None) -> list[Record]:
    """``n`` synthetic records, identical for the same arguments (see :class:`SynthConfig`);
    inconsistent options raise ``ValueError``."""
    config = SynthConfig(seed=seed, plain=plain, extended=extended, rare_names=rare_names,
                         unlabelled=unlabelled)
    return generate(n, config)
