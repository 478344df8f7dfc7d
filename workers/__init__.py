"""GPU workers: the only place that runs inference.

``celery -A workers worker -Q extract --pool solo`` finds the Celery app as
``workers.app``; it is built on first access so importing a submodule (e.g.
the decoders) has no side effects.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from workers.celery_app import app

        return app
    raise AttributeError(name)
