"""The inference engine: base model (+ LoRA adapter) loaded once, batched extraction.

``Engine.extract_batch(texts)`` runs one left-padded, length-sorted
``generate`` per batch (split smaller on out-of-memory), decodes greedily with
the configured constraint, and returns one :class:`Outcome` per text in input
order. It never raises for a single bad row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidModelOutput, TiquError
from core.prompting import render_prompt
from core.schema import FIELDS, Complaint
from core.settings import Settings
from core.validation import parse_complaint
from inference.models import serving_adapter

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What the engine made of one text."""

    complaint: Complaint | None = None
    error: TiquError | None = None
    new_tokens: int = 0
    retried: bool = False
    traces: dict[str, Any] | None = None  # field -> FieldTrace (copy mode)


@dataclass
class FieldScores:
    """Per field: the value's span in its text, its confidence, the fields to review."""

    spans: dict[str, list[int] | None] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False
    review: list[str] = field(default_factory=list)


def field_scores(outcome: Outcome, calibration: dict[str, Any] | None = None,
                 review_below: float = 0.0) -> FieldScores:
    """Spans and confidence of a copy-decoded outcome, through ``calibration``
    (field -> :class:`core.manifest.CalibrationMap`) when given; empty without traces.

    A field is listed for review when its confidence is below ``review_below``.
    """
    if outcome.complaint is None or not outcome.traces:
        return FieldScores()
    from inference.copydecode import spans_and_confidence

    raw = spans_and_confidence(outcome.traces)
    conf = {f: min(1.0, max(0.0, float(c))) for f, c in raw["confidence"].items()}
    calibrated = bool(calibration)
    if calibration:
        conf = {f: calibration[f].apply(c) if f in calibration else c for f, c in conf.items()}
    review = [f for f in FIELDS if f in conf and conf[f] < review_below]
    return FieldScores(raw["spans"], {f: round(c, 6) for f, c in conf.items()}, calibrated,
                       review)


@dataclass
class Stats:
    batches: int = 0
    generated_tokens: int = 0
    model_load_s: float = 0.0
    splits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


#: Words of an error that leaves the device unusable (a broken CUDA context, a
#: device-side assert): splitting the batch cannot help, so it goes to the breaker.
_DEVICE_FAULTS = ("cuda error", "cudaerror", "device-side assert", "cublas_status",
                  "cudnn_status", "illegal memory access", "an illegal instruction")


def _is_oom(err: BaseException) -> bool:
    """Whether ``err`` is a real out-of-memory error, which a smaller batch may avoid.

    ``torch.cuda.OutOfMemoryError``, "CUDA out of memory" and the CPU
    allocator's "can't allocate memory" are. Other CUDA errors ("CUDA error:
    ...", cudaError..., device-side asserts, cuBLAS failures) are not, even
    when the driver adds "out of memory" to their text: the context they leave
    behind fails every later call as well.
    """
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    if any(word in text for word in _DEVICE_FAULTS) and "cuda out of memory" not in text:
        return False
    return "out of memory" in text or "can't allocate memory" in text


class Engine:
    """Holds the model; call :meth:`extract_batch` from one thread at a time."""

    def __init__(self, settings: Settings, model: Any = None, tokenizer: Any = None) -> None:
        from inference.models import load_base, model_fingerprint

        self.settings = settings
        start = time.perf_counter()
        if model is None:
            model, tokenizer, source = load_base(settings)
        else:
            source = getattr(model, "name_or_path", "custom")
        self.model, self.tokenizer = model, tokenizer
        self.model_id = settings.base_model
        self.base_hash = model_fingerprint(source)
        self.adapter_version: str | None = None
        #: The serving adapter's calibration map (field -> CalibrationMap), if it has one.
        self.calibration: dict[str, Any] = {}
        self.stats = Stats(model_load_s=time.perf_counter() - start)
        self._decoders: dict[str, Any] = {}
        #: Reuse the system turn's keys/values and prefill by length groups
        #: (inference.prefill); False gives the plain left-padded prefill.
        self.reuse_prefix = True
        self._prefiller: Any = None
        self._continuous_ok: bool | None = None
        self._shared: int | None = None  # prompt tokens every text shares
        self._pristine: dict[str, Any] = {}  # base weights under a merged adapter
        adapter = serving_adapter(settings)
        if adapter is not None:
            self.load_adapter(adapter, version=adapter_version_of(adapter))

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # --- adapters -----------------------------------------------------------
    def load_adapter(self, path: str, version: str,
                     calibration: dict[str, Any] | None = None) -> None:
        """Load a peft adapter under ``version`` and make it the active one.

        ``calibration`` (field -> :class:`core.manifest.CalibrationMap`) comes
        from the adapter's manifest; when None, a ``manifest.json`` in the
        folder or the one above it (a run folder) is read for it. It serves
        with the adapter and goes with it.

        With ``settings.merge_adapter`` the active adapter is folded into the
        base weights (see :meth:`_merge`); it is unfolded first, so a failed
        load leaves the old adapter serving, folded again. Only a folder with
        safetensors weights is loaded (``core.manifest.check_adapter_folder``).
        """
        from peft import PeftModel

        from core.manifest import check_adapter_folder

        check_adapter_folder(path)  # before anything changes: a refusal keeps the old one
        if calibration is None:
            calibration = local_calibration(path)
        self._unmerge()
        try:
            if isinstance(self.model, PeftModel):
                try:
                    self.model.load_adapter(path, adapter_name=version)
                except Exception:
                    # A half-loaded adapter must not linger next to the serving one.
                    if version in self.model.peft_config and version != self.adapter_version:
                        self.model.delete_adapter(version)
                    raise
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=version)
            self.model.set_adapter(version)
            self.model.eval()
            old, self.adapter_version = self.adapter_version, version
            self.calibration = dict(calibration)
            if old and old != version:
                self.model.delete_adapter(old)
        finally:
            self._merge()

    def use_base(self) -> None:
        """Serve the base model alone: remove every adapter's layers."""
        from peft import PeftModel

        self._unmerge()
        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
            self.model.eval()
        self.adapter_version = None
        self.calibration = {}

    def _lora_layers(self) -> list[tuple[str, Any]]:
        from peft.tuners.lora import LoraLayer

        return [(name, m) for name, m in self.model.named_modules() if isinstance(m, LoraLayer)]

    def _merge(self) -> None:
        """Fold the active adapter into the base weights, keeping the originals.

        Unfolded, every adapted linear layer runs two more small matrix
        products (and, with float32 LoRA weights over a bf16 base, two dtype
        casts) per step: on the default model with an adapter on 12 of 30
        layers that was 168 extra products per decode step, and folding made a
        CPU batch about 18% faster. peft's own ``unmerge`` subtracts the
        update again, which in bf16 does not give the old weights back, so the
        originals are kept, in host memory so that they take no GPU memory from
        the cache, and copied back instead.
        """
        if not self.settings.merge_adapter or self.adapter_version is None or self._pristine:
            return
        layers = self._lora_layers()
        self._pristine = {name: m.get_base_layer().weight.detach().to("cpu", copy=True)
                          for name, m in layers}
        self.model.merge_adapter()

    def _unmerge(self) -> None:
        """Undo :meth:`_merge`: the base weights exactly as they were loaded."""
        if not self._pristine:
            return
        self.model.unmerge_adapter()  # clears peft's merged state
        for name, m in self._lora_layers():
            m.get_base_layer().weight.data.copy_(self._pristine[name])
        self._pristine = {}

    # --- decoding -----------------------------------------------------------
    def _decoder(self, mode: str) -> Any:
        if mode not in self._decoders:
            from inference.decoding import make_decoder

            self._decoders[mode] = make_decoder(mode, self.tokenizer, self.settings)
        return self._decoders[mode]

    def budget(self, text: str) -> int:
        """New-token budget: the text's own length in tokens plus the keys."""
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return min(self.settings.max_new_tokens, n + self.settings.extra_new_tokens)

    def extract_batch(self, texts: list[str], mode: str | None = None,
                      on_done: Callable[[int, Outcome], None] | None = None,
                      source: Callable[[], list[str]] | None = None) -> list[Outcome]:
        """One outcome per text, in input order; invalid rows are retried once
        with copy-constrained decoding when another mode produced them.

        In copy mode ``on_done(i, outcome)`` hears of text ``i`` as soon as its answer
        is done (on the continuous scheduler, while the others still decode); a
        text split off by an out-of-memory retry may be reported twice, with the
        same answer. Other modes ignore it.

        ``source()``, on the continuous scheduler only, is asked for more texts
        whenever a row is free; they are numbered on after ``texts`` and their
        outcomes follow in the order they came. Elsewhere it is never called."""
        mode = mode or self.settings.decoding
        if source is not None and mode == "copy" and self.continuous():
            return self._joining(texts, on_done, source)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        report = None
        if on_done is not None and mode == "copy":
            def report(j: int, out: Outcome) -> None:
                on_done(order[j], out)
        outcomes: list[Outcome] = [Outcome()] * len(texts)
        for i, out in zip(order, self._run_split([texts[i] for i in order], mode, report),
                          strict=True):
            outcomes[i] = out
        retry = [i for i, o in enumerate(outcomes) if o.error is not None]
        if retry and mode != "copy":
            again = self._run_split([texts[i] for i in retry], "copy")
            for i, out in zip(retry, again, strict=True):
                out.retried = True
                outcomes[i] = out
        return outcomes

    def _joining(self, texts: list[str], on_done: Callable[[int, Outcome], None] | None,
                 source: Callable[[], list[str]]) -> list[Outcome]:
        """:meth:`extract_batch` on the continuous scheduler with texts joining as rows
        free up. Out of memory, every text taken so far runs again, split until it
        fits (:meth:`_run_split`), and no more join."""
        n = len(texts)
        order = sorted(range(n), key=lambda i: len(texts[i]))
        joined: list[str] = []

        def more() -> list[str]:
            new = source()
            joined.extend(new)
            return new

        def report(j: int, out: Outcome) -> None:
            if on_done is not None:
                on_done(order[j] if j < n else j, out)

        try:
            got = self.extract_continuous([texts[i] for i in order], on_done=report, source=more)
        except (RuntimeError, MemoryError) as err:
            if not _is_oom(err):
                raise
            self._free_cache()
            return self.extract_batch(texts + joined, "copy", on_done)
        outcomes = [Outcome()] * n + got[n:]
        for j, i in enumerate(order):
            outcomes[i] = got[j]
        return outcomes

    def _run_split(self, texts: list[str], mode: str,
                   report: Callable[[int, Outcome], None] | None = None) -> list[Outcome]:
        if not texts:
            return []
        try:
            return self._generate(texts, mode, report)
        except (RuntimeError, MemoryError) as err:
            if not _is_oom(err):
                raise  # not the batch's size: the worker's breaker decides
            self._free_cache()
            if len(texts) == 1:
                oom = TiquError(f"out of memory on one text: {type(err).__name__}")
                return [Outcome(error=oom)]
            self.stats.splits += 1
            half = len(texts) // 2
            log.warning("batch of %d ran out of memory; retrying as %d + %d",
                        len(texts), half, len(texts) - half)
            later = None
            if report is not None:
                def later(j: int, out: Outcome) -> None:
                    report(half + j, out)
            return (self._run_split(texts[:half], mode, report)
                    + self._run_split(texts[half:], mode, later))

    def _free_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _generate(self, texts: list[str], mode: str,
                  report: Callable[[int, Outcome], None] | None = None) -> list[Outcome]:
        import torch
        from transformers import GenerationConfig

        if mode == "copy" and self.continuous():
            return self.extract_continuous(texts, on_done=report)
        tok = self.tokenizer
        budgets = [self.budget(t) for t in texts]
        decoder = self._decoder(mode)
        kwargs = decoder.generate_kwargs(texts, budgets)
        with torch.inference_mode():
            enc = self._inputs([render_prompt(tok, t) for t in texts], max(budgets))
            # A static cache is written in place; the growing one is copied whole at
            # every step (38% of a CPU decode step at batch 32).
            config = GenerationConfig(
                do_sample=False, num_beams=1, use_cache=True, max_new_tokens=max(budgets),
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                cache_implementation=None if "cache" in enc else "static",
            )
            out = self.model.generate(**enc, generation_config=config, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        self.stats.batches += 1
        traces = decoder.traces(kwargs) if hasattr(decoder, "traces") else [None] * len(texts)
        outcomes = [self._outcome(row, tr) for row, tr in zip(new, traces, strict=True)]
        for j, out in enumerate(outcomes if report is not None else []):
            report(j, out)  # type: ignore[misc]
        return outcomes

    def continuous(self) -> bool:
        """Whether copy decoding runs on the continuous scheduler (the setting, and a
        model whose cache it can lay out)."""
        if self.settings.scheduler != "continuous":
            return False
        if self._continuous_ok is None:
            from inference.continuous import ContinuousDecoder

            self._continuous_ok = ContinuousDecoder.supports(self.model)
        return self._continuous_ok

    def extract_continuous(self, texts: list[str],
                           on_done: Callable[[int, Outcome], None] | None = None,
                           source: Callable[[], list[str]] | None = None) -> list[Outcome]:
        """Copy-decode ``texts`` on the continuous scheduler (inference.continuous):
        at most ``settings.batch_size`` rows run at once, a row leaves as its answer
        closes and the next joins. ``on_done(i, outcome)`` hears of text ``i`` as soon
        as it is done; ``source()``, asked before every pass, may hand over more texts
        (numbered on after ``texts``). Returns every outcome in order."""
        from inference.continuous import ContinuousDecoder

        tok = self.tokenizer
        constraint = self._decoder("copy").constraint
        prefiller = self._prefill_cache()
        version = self.adapter_version

        def prefix(ids: tuple[int, ...]) -> Any:
            return prefiller._prefix_layers(self.model, ids, version)

        loop = ContinuousDecoder(
            self.model, constraint, tok.pad_token_id, max_running=self.settings.batch_size,
            jump_forward=self.settings.jump_forward, prefix=prefix if prefiller else None)
        outcomes: list[Outcome | None] = []

        def item(text: str) -> tuple[int, str, list[int], int]:
            outcomes.append(None)
            ids = tok(render_prompt(tok, text), add_special_tokens=False)["input_ids"]
            return len(outcomes) - 1, text, ids, self.budget(text)

        def done(i: int, ids: list[int], proc: Any) -> None:
            outcomes[i] = out = self._outcome(ids, proc.traces()[0])
            if on_done is not None:
                on_done(i, out)

        more = (lambda: [item(t) for t in source()]) if source is not None else None
        stats = loop.run([item(t) for t in texts], done, more, prefix_len=self._prefix_len())
        self.stats.batches += 1
        self.stats.extra["continuous"] = stats.as_dict()
        return [o if o is not None else Outcome(error=TiquError("not decoded"))
                for o in outcomes]

    def _prefill_cache(self) -> Any:
        """The engine's :class:`inference.prefill.Prefiller` (it keeps the system turn's
        keys and values), or False for a model whose cache it cannot lay out."""
        if self._prefiller is None:
            from inference.prefill import Prefiller

            self._prefiller = Prefiller(self.tokenizer.pad_token_id) if Prefiller.supports(
                self.model) else False
        return self._prefiller

    def _prefix_len(self) -> int:
        """Prompt tokens every text shares (the system turn and the user turn's start)."""
        if self._shared is None:
            from inference.prefill import shared_prefix_len

            tok = self.tokenizer
            probes = [tok(render_prompt(tok, t), add_special_tokens=False)["input_ids"]
                      for t in ("甲", "Zz 1", "\n{")]
            self._shared = shared_prefix_len(probes)
        return self._shared

    def _inputs(self, prompts: list[str], max_new_tokens: int) -> dict[str, Any]:
        """``generate`` inputs; with several prompts, their cache comes prefilled."""
        tok = self.tokenizer
        if self.reuse_prefix and len(prompts) > 1:
            from inference.prefill import shared_prefix_len

            self._prefill_cache()
            rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
            if self._prefiller and shared_prefix_len(rows) > 0:
                return dict(self._prefiller.inputs(self.model, rows, self.adapter_version,
                                                   max_new_tokens))
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _outcome(self, row: Any, traces: dict[str, Any] | None = None) -> Outcome:
        tok = self.tokenizer
        ids = [int(t) for t in row if int(t) != tok.pad_token_id]
        n = len(ids)
        self.stats.generated_tokens += n
        raw = tok.decode(ids, skip_special_tokens=True)
        try:
            return Outcome(complaint=parse_complaint(raw), new_tokens=n, traces=traces)
        except InvalidModelOutput as err:
            return Outcome(error=err, new_tokens=n, traces=traces)


def adapter_version_of(path: str) -> str:
    """The version an adapter loaded at start serves under: the shipped adapter's
    manifest version, ``local`` for any other folder (``TIQU_ADAPTER``)."""
    from pathlib import Path

    from core.manifest import Manifest
    from inference.models import SHIPPED_ADAPTER

    if Path(path).resolve().parent != SHIPPED_ADAPTER.resolve():
        return "local"
    try:
        return Manifest.load(SHIPPED_ADAPTER).version
    except (OSError, ValueError):
        return "shipped"


def local_calibration(path: str) -> dict[str, Any]:
    """The calibration map of the manifest in adapter folder ``path`` or its parent
    (a run folder); empty when there is none or it cannot be read."""
    from pathlib import Path

    from core.manifest import MANIFEST_NAME, Manifest

    folder = Path(path)
    for run in (folder, folder.parent):
        if (run / MANIFEST_NAME).is_file():
            try:
                return dict(Manifest.load(run).calibration)
            except (OSError, ValueError) as err:  # the weights still serve, uncalibrated
                log.warning("adapter manifest unreadable, confidence stays raw: %s",
                            type(err).__name__)
                return {}
    return {}
