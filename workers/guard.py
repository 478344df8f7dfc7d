"""Bad-message handling for workers (filled in by the reliability work)."""

from __future__ import annotations

from typing import Any


def install(app: Any, runtime: Any, settings: Any) -> None:
    """Turn undecodable or disallowed messages into error envelopes where possible."""
