"""The options of one synthetic data set, checked when built."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class SynthConfig(BaseModel):
    """Which layout families a data set draws from, and their shares.

    ``plain`` gives one layout only (:data:`trainer.synth.default.PLAIN`), as a
    baseline for ablations. ``extended`` lays about 40% of the records out in the
    extended layouts (drawn per record); the others come from the default layouts.
    With ``rare_names`` a third of the extended Chinese texts name a person with a
    compound or rare family name, and name fields have more labels; without it the
    extended output is what it was before that option existed. ``unlabelled`` sets
    the share of default-layout texts given without any field label (the
    generator's own mix has a quarter); None keeps the default draws.

    Inconsistent options raise ``ValueError`` (pydantic's ``ValidationError``) naming
    every problem at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    plain: bool = False
    extended: bool = False
    rare_names: bool = False
    unlabelled: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        problems = []
        if self.plain and self.extended:
            problems.append("plain and extended exclude each other")
        if self.rare_names and not self.extended:
            problems.append("rare_names applies to the extended layouts only")
        share = self.unlabelled
        if share is not None and (self.plain or not 0.0 <= share <= 1.0):
            problems.append(f"unlabelled must be a share in [0, 1] without plain, got {share}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def family(self) -> str:
        """The family that draws the records not given to the extended layouts."""
        return "plain" if self.plain else "default"
