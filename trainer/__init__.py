"""LoRA fine-tuning for tiqu: data sets, training, evaluation.

``celery -A trainer worker -Q train --pool solo`` finds the Celery app as
``trainer.app``; it is built on first access, so importing a submodule (the
data tools, the evaluator) has no side effects.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from trainer.celery_app import app

        return app
    raise AttributeError(name)
