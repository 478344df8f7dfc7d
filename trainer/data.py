"""Training data: the record type, loaders and writers, splits and a synthetic generator.

A :class:`Record` is one complaint text with its gold answer. Every non-null gold
value must occur verbatim in the text: the model is trained to copy, never to
rewrite. Files come in three formats, detected per row:

- ``seed``: ``{"system", "instruction", "input", "output"}`` (the tutorial's format);
  ``output`` is the answer as a JSON string (a ```json fence is allowed) or an object;
- ``chat``: ``{"messages": [system, user, assistant]}``;
- ``gold``: ``{"text", "gold", "tags"?}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import DataError
from core.prompting import SYSTEM_PROMPT
from core.schema import FIELDS, answer_json
from core.validation import normalize
from trainer import banks

Gold = dict[str, str | None]
Split = Literal["train", "val", "test"]
FORMATS: tuple[str, ...] = ("seed", "chat", "gold")
SPLITS: tuple[Split, ...] = ("train", "val", "test")

_SEED_KEYS = {"system", "instruction", "input", "output", "history", "id"}
_CHAT_KEYS = {"messages", "id"}
_GOLD_KEYS = {"text", "gold", "tags", "id"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)


@dataclass
class Record:
    """One complaint text, its gold answer (keys exactly ``FIELDS``, in order) and tags."""

    text: str
    gold: Gold
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.gold) - set(FIELDS))
        if unknown:
            raise DataError(f"gold has unknown keys {unknown}; expected {list(FIELDS)}")
        self.gold = {k: self.gold.get(k) for k in FIELDS}


def record_to_seed(r: Record) -> dict[str, str]:
    """The seed-format row of a record; ``output`` is the canonical answer JSON."""
    answer = answer_json(r.gold)
    return {"system": SYSTEM_PROMPT, "instruction": "", "input": r.text, "output": answer}


def record_to_chat(r: Record) -> dict[str, Any]:
    """The chat-format row of a record: system prompt, the text, the answer JSON."""
    turns = (("system", SYSTEM_PROMPT), ("user", r.text), ("assistant", answer_json(r.gold)))
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def record_to_gold(r: Record) -> dict[str, Any]:
    """The gold-format row of a record (the only format that keeps tags)."""
    return {"text": r.text, "gold": dict(r.gold), "tags": list(r.tags)}


# --- validation ---------------------------------------------------------------


def gold_problems(text: Any, gold: Any) -> list[str]:
    """Every reason why ``gold`` is not a valid, grounded answer for ``text``."""
    if not isinstance(text, str):
        return [f"text must be a string, got {type(text).__name__}"]
    if not text.strip():
        return ["text is empty"]
    if not isinstance(gold, dict):
        return [f"answer must be a JSON object, got {type(gold).__name__}"]
    problems = []
    unknown = sorted(str(k) for k in set(gold) - set(FIELDS))
    if unknown:
        problems.append(f"unknown keys {unknown} in answer; expected {list(FIELDS)}")
    for key in FIELDS:
        value = gold.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"gold {key!r} must be a string or null, got {type(value).__name__}")
        elif not value.strip():
            problems.append(f"gold {key!r} is an empty string (use null)")
        elif value not in text:
            problems.append(f"gold {key!r} value {value[:40]!r} not found in text")
    return problems


def record_problems(r: Record) -> list[str]:
    """Problems of a built record (same checks as the loaders, plus tag types)."""
    problems = gold_problems(r.text, r.gold)
    if not all(isinstance(t, str) for t in r.tags):
        problems.append("tags must be strings")
    return problems


def _raise_if(problems: list[str], where: str) -> None:
    if problems:
        rows = len({p.split(":", 1)[0] for p in problems})
        listing = "\n".join(f"  {p}" for p in problems)
        raise DataError(f"{where}: {rows} bad row(s):\n{listing}")


# --- loading ------------------------------------------------------------------


def _answer(value: Any) -> tuple[Any, list[str]]:
    """Parse an answer given as an object or a JSON string, possibly fenced."""
    if isinstance(value, dict):
        return value, []
    if not isinstance(value, str):
        return None, [f"output must be a JSON string or object, got {type(value).__name__}"]
    match = _FENCE.search(value)
    try:
        return json.loads(match.group(1) if match else value), []
    except json.JSONDecodeError as err:
        return None, [f"output is not valid JSON ({err.msg} at char {err.pos})"]


def _key_problems(row: dict[str, Any], required: Iterable[str], allowed: set[str]) -> list[str]:
    missing = [f"missing field {k!r}" for k in required if k not in row]
    unknown = sorted(str(k) for k in set(row) - allowed)
    return missing + ([f"unknown keys {unknown}"] if unknown else [])


def _from_seed(row: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    problems = _key_problems(row, ("input", "output"), _SEED_KEYS)
    gold, more = _answer(row["output"]) if "output" in row else (None, [])
    return row.get("input"), gold, problems + more


def _from_chat(row: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    problems = _key_problems(row, ("messages",), _CHAT_KEYS)
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None, None, problems + ["messages must be a list of objects"]
    by_role: dict[str, list[Any]] = {}
    for m in messages:
        by_role.setdefault(str(m.get("role")), []).append(m.get("content"))
    for role in ("user", "assistant"):
        if len(by_role.get(role, [])) != 1:
            problems.append(f"messages need exactly one {role!r} message")
    if problems:
        return None, None, problems
    gold, more = _answer(by_role["assistant"][0])
    return by_role["user"][0], gold, more


def _from_gold(row: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    problems = _key_problems(row, ("text", "gold"), _GOLD_KEYS)
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append("tags must be a list of strings")
    return row.get("text"), row.get("gold"), problems


def parse_row(row: Any) -> tuple[Record | None, list[str]]:
    """A record from one row of any format, or ``None`` and every problem found."""
    if not isinstance(row, dict):
        return None, [f"row must be a JSON object, got {type(row).__name__}"]
    if "messages" in row:
        text, gold, problems = _from_chat(row)
    elif "text" in row or "gold" in row:
        text, gold, problems = _from_gold(row)
    elif {"input", "output", "instruction"} & set(row):
        text, gold, problems = _from_seed(row)
    else:
        return None, [f"unknown format (keys {sorted(map(str, row))})"]
    if text is not None and gold is not None:
        problems += gold_problems(text, gold)
    if problems:
        return None, problems
    return Record(text=text, gold=gold, tags=list(row.get("tags", []))), []


def _read_rows(path: Path) -> list[tuple[int, Any, str | None]]:
    """``(row number, value, JSON error)`` from a JSON array, one JSON object or JSONL.

    JSONL rows are numbered by line; blank lines are skipped.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from err
    try:
        whole = json.loads(raw)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, (list, dict)):
        rows = whole if isinstance(whole, list) else [whole]
        return [(number, row, None) for number, row in enumerate(rows, start=1)]
    found: list[tuple[int, Any, str | None]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            try:
                found.append((number, json.loads(line), None))
            except json.JSONDecodeError as err:
                found.append((number, None, f"invalid JSON ({err.msg} at char {err.pos})"))
    return found


def load_records(path: str | Path) -> list[Record]:
    """Load every row of a seed, chat or gold file (JSON array or JSONL).

    Raises :class:`DataError` listing every bad row (``row N: reason``) if any row
    is bad, or when the file has no rows at all.
    """
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    records, problems = [], []
    for number, row, json_error in rows:
        record, found = (None, [json_error]) if json_error else parse_row(row)
        problems += [f"row {number}: {p}" for p in found]
        if record is not None:
            records.append(record)
    _raise_if(problems, str(path))
    return records


def save_records(records: Sequence[Record], path: str | Path, fmt: str = "seed") -> Path:
    """Write records as ``fmt`` rows: a JSON array for ``*.json``, JSONL otherwise.

    Every record is validated first; with any bad record a :class:`DataError` lists
    them all and nothing is written. The file is written to a temporary name in
    the same folder and renamed, so a reader never sees a partial file.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    path = Path(path)
    problems = [f"row {i}: {p}" for i, r in enumerate(records, 1) for p in record_problems(r)]
    _raise_if(problems, str(path))
    convert = {"seed": record_to_seed, "chat": record_to_chat, "gold": record_to_gold}[fmt]
    rows = [convert(r) for r in records]
    if path.suffix == ".json":
        body = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _write_atomic(path, body)
    return path


def _write_atomic(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- splits and hashes --------------------------------------------------------


def split_of(text: str, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """The split of a text, from the sha256 of its normalised form.

    The same text (up to width and whitespace) always lands in the same split,
    whatever else is in the data set, so duplicates never leak across splits.
    """
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-9:
        raise DataError(f"split ratios {ratios} must be three non-negative numbers summing to 1")
    digest = hashlib.sha256(normalize(text).encode("utf-8")).digest()
    x = int.from_bytes(digest[:8], "big") / 2**64
    if x < ratios[0]:
        return "train"
    return "val" if x < ratios[0] + ratios[1] else "test"


def split_records(
    records: Iterable[Record], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[Record]]:
    """Records grouped by :func:`split_of`; all three keys are always present, order kept."""
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r in records:
        out[split_of(r.text, ratios)].append(r)
    return out


def data_hash(records: Iterable[Record]) -> str:
    """sha256 of the records' texts and golds as canonical JSON, in order.

    Tags are left out, so converting between formats keeps the hash.
    """
    canon = [{"text": r.text, "gold": {k: r.gold.get(k) for k in FIELDS}} for r in records]
    blob = json.dumps(canon, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def hard_eval_path() -> Path:
    """Path of the hand-written hard evaluation set shipped with the package."""
    return Path(__file__).resolve().parent / "evalsets" / "hard_v1.jsonl"


def load_hard_eval() -> list[Record]:
    """The hard evaluation set (gold format, with tags)."""
    return load_records(hard_eval_path())


# --- synthetic generator --------------------------------------------------------

_HALF = str.maketrans(banks.HALF_WIDTH)
_ENDS = "。！？!?"
_FAKER: list[Any] = []


@dataclass
class _Style:
    """How one synthetic text is laid out; chosen once per text."""

    layout: str
    half: bool
    multiline: bool
    spaces: bool
    joiner: str

    @classmethod
    def draw(cls, rng: random.Random) -> _Style:
        layout = rng.choice(("labelled", "labelled", "unlabelled", "inline"))
        half = rng.random() < 0.3
        multiline = layout != "inline" and rng.random() < 0.45
        spaces = rng.random() < 0.2
        if multiline:
            joiner = "\n"
        else:
            joiner = rng.choice((", ", "; ", " ") if half else ("，", "；", " "))
            joiner = "，" if layout == "inline" and not half else joiner
        return cls(layout, half, multiline, spaces, joiner + (" " if spaces else ""))

    def sep(self, rng: random.Random) -> str:
        colon = rng.choice((":", ": ")) if self.half else "："
        return f" {colon.strip()} " if self.spaces and rng.random() < 0.5 else colon

    def punct(self, s: str) -> str:
        return s.translate(_HALF) if self.half else s

    def tags(self) -> list[str]:
        return [
            self.layout,
            "halfwidth" if self.half else "fullwidth",
            "multiline" if self.multiline else "oneline",
        ] + (["spaces"] if self.spaces else [])


def _faker(seed: int) -> Any:
    if not _FAKER:
        from faker import Faker

        _FAKER.append(Faker("zh_CN"))
    _FAKER[0].seed_instance(seed)
    return _FAKER[0]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _draw_email(rng: random.Random, fake: Any) -> tuple[str, str]:
    kind = rng.choice(("faker", "faker", "free", "pinyin", "qq"))
    domain = rng.choice(banks.FREE_MAIL_DOMAINS)
    if kind == "faker":
        return fake.email(), "email_faker"
    if kind == "free":
        return f"{fake.user_name()}@{domain}", "email_free"
    if kind == "qq":
        return f"{rng.randint(1, 9)}{_digits(rng, rng.randint(5, 9))}@qq.com", "email_qq"
    given, family = fake.romanized_name().lower().split(" ", 1)
    user = rng.choice((f"{family}{given}", f"{given}.{family}", f"{family}_{given}"))
    return f"{user}{rng.choice(('', _digits(rng, 2), _digits(rng, 4)))}@{domain}", "email_pinyin"


def _draw_address(rng: random.Random, fake: Any) -> str:
    full = str(fake.address())
    street = full.rsplit(" ", 1)[0]
    room = f"{rng.randint(1, 12)}单元{rng.randint(1, 30)}0{rng.randint(1, 4)}室"
    return rng.choice((full, full, street, street + room))


def _draw_values(rng: random.Random, fake: Any, style: _Style) -> tuple[Gold, list[str]]:
    """Gold values (some set to null) and their tags."""
    topic = rng.choice(sorted(banks.COMPLAINTS))
    sentences = rng.sample(banks.COMPLAINTS[topic], rng.choice((1, 1, 2, 2, 3)))
    email, email_tag = _draw_email(rng, fake)
    question = style.punct("".join(sentences))
    drawn = (str(fake.name()), _draw_address(rng, fake), email, question)
    values: Gold = dict(zip(FIELDS, drawn, strict=True))
    missing = {k for k, rate in banks.MISSING_RATE.items() if rng.random() < rate}
    if "question" in missing and len(missing) > 2:
        missing.discard("question")  # a text without a complaint keeps two contact fields
    values.update(dict.fromkeys(missing))
    tags = [f"missing_{k}" for k in FIELDS if k in missing]
    tags += [f"topic:{topic}"] if values["question"] else []
    return values, tags + ([email_tag] if values["email"] else [])


def _segment(key: str, value: str | None, style: _Style, rng: random.Random) -> str | None:
    """One field as it appears in the text, or None when it is left out."""
    if style.layout == "unlabelled":
        return value
    if style.layout == "inline":
        return None if value is None else style.punct(rng.choice(banks.INLINE[key])) + value
    label = rng.choice(banks.LABELS[key])
    if value is None:
        stated = rng.random() < 0.35
        return f"{label}{style.sep(rng)}{rng.choice(banks.ABSENT_WORDS)}" if stated else None
    return f"{label}{style.sep(rng)}{value}"


def _distractors(rng: random.Random, style: _Style) -> tuple[list[str], list[str]]:
    """Phone, order, ID numbers and another party's email, each with its tag."""
    found: list[tuple[str, str]] = []
    if rng.random() < 0.25:
        phone = "1" + rng.choice("3456789") + _digits(rng, 9)
        bare = style.layout == "unlabelled" and rng.random() < 0.5
        label = "" if bare else rng.choice(banks.PHONE_LABELS) + style.sep(rng)
        found.append((label + phone, "distractor_phone"))
    if rng.random() < 0.15:
        order = rng.choice(("", "", "SF", "JD", "YT")) + _digits(rng, rng.randint(12, 18))
        found.append((rng.choice(banks.ORDER_LABELS) + style.sep(rng) + order, "distractor_order"))
    if rng.random() < 0.1:
        ident = _digits(rng, 17) + rng.choice("0123456789X")
        found.append((rng.choice(banks.ID_LABELS) + style.sep(rng) + ident, "distractor_id"))
    if rng.random() < 0.12:
        lead = style.punct(rng.choice(banks.OTHER_EMAIL_LEADS))
        found.append((lead + rng.choice(banks.OTHER_EMAILS), "distractor_email"))
    return [s for s, _ in found], [t for _, t in found]


def _join(parts: list[str], style: _Style, rng: random.Random) -> str:
    out = ""
    for part in parts:
        if out and not style.multiline and out[-1] in _ENDS:
            out += rng.choice(("", " "))
        elif out:
            out += style.joiner
        out += part
    return out


def _arrange(contact: list[str], question: str | None, rng: random.Random) -> tuple[list[str], str]:
    """Field order: the complaint first, last or (rarely) in the middle."""
    if question is None:
        return contact, ""
    roll = rng.random()
    if roll < 0.25 or not contact:
        return [question, *contact], "complaint_first" if contact else "complaint_only"
    if roll < 0.35 and len(contact) >= 2:
        cut = rng.randint(1, len(contact) - 1)
        return [*contact[:cut], question, *contact[cut:]], "complaint_middle"
    return [*contact, question], "complaint_last"


def _synth_one(rng: random.Random, fake: Any) -> Record | None:
    """One synthetic record, or None when drawn values collide (the caller redraws)."""
    style = _Style.draw(rng)
    values, tags = _draw_values(rng, fake, style)
    segs = {k: _segment(k, v, style, rng) for k, v in values.items()}
    tags += ["stated_absent"] if any(values[k] is None and segs[k] for k in FIELDS) else []
    contact = [s for k, s in segs.items() if s is not None and k != "question"]
    extra, extra_tags = _distractors(rng, style)
    for seg in extra:
        contact.insert(rng.randint(0, len(contact)), seg)
    if rng.random() < 0.35 and len(contact) > 1:
        rng.shuffle(contact)
        tags.append("shuffled")
    parts, where = _arrange(contact, segs["question"], rng)
    text = _join(parts, style, rng)
    if rng.random() < 0.3:
        text = style.punct(rng.choice(banks.GREETINGS)) + ("\n" if style.multiline else "") + text
        tags.append("greeting")
    if rng.random() < 0.25:
        glue = "\n" if style.multiline else ("" if text[-1] in _ENDS else style.joiner)
        text += glue + style.punct(rng.choice(banks.CLOSINGS))
        tags.append("closing")
    if style.spaces and rng.random() < 0.5:
        text = f"  {text} "
    record = Record(text, values, style.tags() + tags + extra_tags + ([where] if where else []))
    return record if _clean(record) else None


def _clean(r: Record) -> bool:
    """No gold value inside the question or another party's email, so golds are unambiguous."""
    q, email = r.gold["question"] or "", r.gold["email"] or ""
    others = [v for k in ("name", "address", "email") if (v := r.gold[k])]
    clash = bool(email) and any(email in o or o in email for o in banks.OTHER_EMAILS)
    return not clash and not any(v in q for v in others)


def synth_records(n: int, seed: int) -> list[Record]:
    """``n`` synthetic records, identical for the same ``(n, seed)``.

    Every record is checked: each non-null gold value occurs verbatim in the text,
    and the question span contains no other gold value.
    """
    rng = random.Random(seed)
    fake = _faker(seed)
    out: list[Record] = []
    while len(out) < n:
        record = _synth_one(rng, fake)
        if record is None:
            continue
        problems = record_problems(record)
        assert not problems, f"synthetic record is invalid: {problems} in {record.text!r}"
        out.append(record)
    return out
