"""The extended family: e-mails, stories, complaint-then-contact texts and ticket forms
(layouts registered by name in :data:`LAYOUTS`), about 40% of the texts with ``extended``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from trainer.records import Record
from trainer.synth.after import AFTER_TAGS
from trainer.synth.common import is_clean
from trainer.synth.config import SynthConfig
from trainer.synth.contact_last import contact_last_text
from trainer.synth.draft import ENGLISH_RATE, Choices, Draft, draft, is_clean_extended
from trainer.synth.email_body import email_text
from trainer.synth.form_table import form_text
from trainer.synth.narrative import narrative_text

#: The layouts that ``extended=True`` adds; "injection" rides on one of them.
EXTENDED_LAYOUTS = ("email_body", "narrative", "contact_last", "form_table")
EXTENDED_TAGS = (*EXTENDED_LAYOUTS, "injection")
#: What some extended texts have after the complaint, never in the question: status
#: rows, a closing on a line of its own, a contact sentence, a pipe table's later rows.
BOUNDARY_TAGS = (*AFTER_TAGS, "pipe_table")
#: Share of the records drawn in an extended layout when the config asks for them.
EXTENDED_SHARE = 0.4

#: Each extended layout by name; :data:`EXTENDED_LAYOUTS` fixes the order they are drawn in.
LAYOUTS: dict[str, Callable[[Choices, Draft], str | None]] = {
    "email_body": email_text,
    "narrative": narrative_text,
    "contact_last": contact_last_text,
    "form_table": form_text,
}


def extended_one(rng: random.Random, fake: Any, config: SynthConfig) -> Record | None:
    """One record in an extended layout, or None when it must be redrawn."""
    layout = rng.choice(EXTENDED_LAYOUTS)
    width = rng.choices(("full", "half", "mixed"), (0.55, 0.25, 0.2))[0]
    x = Choices(rng, width, english=rng.random() < ENGLISH_RATE, rare_names=config.rare_names)
    d = draft(x, fake, breaks="" if layout == "form_table" else "\n\t")
    text = LAYOUTS[layout](x, d)
    if text is None:
        return None
    width_tag = {"full": "fullwidth", "half": "halfwidth", "mixed": "mixed_width"}[width]
    tags = [layout, width_tag, "multiline" if "\n" in text else "oneline"]
    tags += ["english"] if x.english else []
    record = Record(text, d.values, tags + list(dict.fromkeys(d.tags)))
    return record if is_clean(record) and is_clean_extended(record, d) else None
