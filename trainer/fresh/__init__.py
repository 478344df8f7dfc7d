"""Fresh layouts: complaint tickets that ``tiqu data synth`` (default or
``--extended``) never generates, for measuring what a hundred corrections buy.

Four families, one module each, each with sentence banks of its own (nothing from
trainer.banks, trainer.banks_extra or Faker):

- ``chat`` (trainer.fresh.chat): an exported customer-service chat with
  timestamps; the complaint is one customer turn, the details come in others;
- ``callnote`` (trainer.fresh.callnote): a call-centre agent's notes (来电记录,
  工单号, shorthand), the caller's details in note form, the complaint as
  reported speech (``来电人称……``) in one paragraph;
- ``ocr`` (trainer.fresh.ocr): an OCR'd paper form: letter-spaced labels, mixed
  widths, the complaint wrapped at the box's width, smudges outside the values;
- ``mixed`` (trainer.fresh.mixed): mixed Chinese and English, English names and
  addresses written the English way.

The question follows the project's convention (docs/training.md, "What the
question is"): the whole complaint, with its history, request and polite closing,
never a greeting, label or contact detail. Each of name, address and e-mail is
null in about 15% of the tickets, the question never. Every record is checked:
each non-null gold value occurs verbatim in its text and the question holds no
other gold value.

:func:`generate_fresh` draws the families in turn; :func:`fresh_split` parts the
tickets into the corrections ``pool`` and the ``test`` part by a salted sha256 of
each text. ``trainer/evalsets/fresh_v1.jsonl`` is ``generate_fresh(320, 2026)``,
written by ``tiqu data fresh -o FILE``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from core.validation import normalize
from trainer.fresh.callnote import callnote_one
from trainer.fresh.chat import chat_one
from trainer.fresh.mixed import mixed_one
from trainer.fresh.ocr import ocr_one
from trainer.records import Record, record_problems

__all__ = [
    "FAMILIES", "FRESH_PATH", "FRESH_SEED", "FRESH_SIZE", "POOL_SHARE", "SPLITS",
    "fresh_split", "generate_fresh", "split_of_fresh",
]

#: One ticket of a family from the shared random stream, or None to draw again.
Family = Callable[[random.Random], Record | None]
#: The families, in the order :func:`generate_fresh` takes them.
FAMILIES: dict[str, Family] = {
    "chat": chat_one,
    "callnote": callnote_one,
    "ocr": ocr_one,
    "mixed": mixed_one,
}
#: The fixed set's size and seed, and where it is stored.
FRESH_SIZE = 320
FRESH_SEED = 2026
FRESH_PATH = Path(__file__).resolve().parent.parent / "evalsets" / "fresh_v1.jsonl"
SPLITS = ("pool", "test")
#: Share of the tickets in the corrections pool; the rest are the test part.
POOL_SHARE = 0.6
_SALT = b"tiqu-fresh-v1:"
_MAX_TRIES = 200


def split_of_fresh(text: str) -> str:
    """``"pool"`` or ``"test"``: a salted sha256 of the text's normalised form, so
    the part depends on the text alone (and differs from trainer.data's
    train/val/test split and from the retrain gate's split)."""
    digest = hashlib.sha256(_SALT + normalize(text).encode("utf-8")).digest()
    return "pool" if int.from_bytes(digest[:8], "big") / 2**64 < POOL_SHARE else "test"


def fresh_split(records: Iterable[Record]) -> dict[str, list[Record]]:
    """The tickets parted into the corrections ``pool`` (about 60%) and the ``test``
    part (about 40%), order kept.

    The split was fixed before any model was scored on these tickets: it depends
    on the salt and each text only. Do not change the salt, :data:`POOL_SHARE` or
    the stored file after a score has been seen.
    """
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r in records:
        out[split_of_fresh(r.text)].append(r)
    return out


def generate_fresh(n: int, seed: int) -> list[Record]:
    """``n`` fresh tickets, identical for the same ``n`` and ``seed`` (and the first
    ``n`` of a longer run): row ``i`` is of family ``i % 4`` in :data:`FAMILIES`
    order. Tags: the family, ``"fresh"`` and the part (``"pool"`` or ``"test"``).
    No text occurs twice."""
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    rng = random.Random(f"fresh:{seed}")
    makers = list(FAMILIES.items())
    seen: set[str] = set()
    out: list[Record] = []
    for i in range(n):
        family, make = makers[i % len(makers)]
        record = _draw(family, make, rng, seen)
        problems = record_problems(record)
        assert not problems, f"fresh record is invalid: {problems} in {record.text!r}"
        seen.add(normalize(record.text))
        record.tags.append(split_of_fresh(record.text))
        out.append(record)
    return out


def _draw(family: str, make: Family, rng: random.Random, seen: set[str]) -> Record:
    """The next usable ticket of a family whose text is not in ``seen``."""
    for _ in range(_MAX_TRIES):
        record = make(rng)
        if record is not None and normalize(record.text) not in seen:
            return record
    raise RuntimeError(f"could not draw a usable {family} ticket")  # pragma: no cover
