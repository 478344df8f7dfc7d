"""Prometheus metrics for workers (filled in by the monitoring work)."""

from __future__ import annotations

from typing import Any


def install(app: Any, runtime: Any, settings: Any) -> None:
    """Register metric hooks on ``runtime`` and serve them on settings.metrics_port."""
