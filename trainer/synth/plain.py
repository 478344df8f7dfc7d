"""The plain family: the seed tutorial's kind of text. Every field labelled, full
width, one line, contact details then the complaint, nothing missing, no distractors.
"""

from __future__ import annotations

import random
from typing import Any

from trainer.records import Record
from trainer.synth.common import is_clean
from trainer.synth.config import SynthConfig
from trainer.synth.default import PLAIN, draw_values, join_parts, segment


def plain_one(rng: random.Random, fake: Any, config: SynthConfig) -> Record | None:
    """One plain record, or None when drawn values collide (the caller redraws)."""
    values, tags = draw_values(rng, fake, PLAIN, plain=True)
    segs = [segment(k, v, PLAIN, rng) for k, v in values.items()]
    text = join_parts([s for s in segs if s is not None], PLAIN, rng)
    record = Record(text, values, [*PLAIN.tags(), *tags, "plain"])
    return record if is_clean(record) else None
