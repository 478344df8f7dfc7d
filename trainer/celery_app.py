"""The Celery app for ``celery -A trainer worker -Q train --pool solo``.

Settings come from ``TIQU_*`` environment variables, built once here (the entry
point). It registers ``tiqu.train`` and ``tiqu.correct``; the model loads inside
each task, so an idle training worker holds no model.
"""

from __future__ import annotations

from core.queue import make_celery
from core.settings import Settings
from trainer.tasks import register, register_correct

settings = Settings()
app = make_celery(settings, main="tiqu-trainer")
# One run at a time and nothing reserved behind it: runs take minutes to hours,
# and a reserved run would wait on this worker while another one sits idle.
app.conf.worker_prefetch_multiplier = 1
train = register(app, settings)
correct = register_correct(app, settings)
