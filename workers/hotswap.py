"""Adapter hot swap between batches (filled in by the adapter-registry work)."""

from __future__ import annotations

from typing import Any


def install(app: Any, runtime: Any, settings: Any) -> None:
    """Register the before-batch swap check and the broadcast control command."""
