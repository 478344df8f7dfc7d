"""The Celery app for ``celery -A trainer worker -Q train --pool solo``.

Settings come from ``TIQU_*`` environment variables, built once here (the entry
point). It registers ``tiqu.train`` and ``tiqu.correct``; the model loads inside
each task, so an idle training worker holds no model. It uses the same kombu
transport (core.transport.kombu_redis, selected by module path) and message
guard as the extract workers: a hostile item on the ``train`` list is answered
or dead-lettered, and a killed worker's run comes back within
``TIQU_DEAD_WORKER_S``. It has no batch task, so nothing settles a fetch before
a flush here.
"""

from __future__ import annotations

from core.queue import make_celery
from core.settings import Settings
from core.transport import faults, guard, kombu_redis
from trainer import metrics
from trainer.tasks import register, register_correct

#: Largest message the train queue takes (16 MiB): inline rows above it are
#: dead-lettered before they are decoded.
TRAIN_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

settings = Settings()
faults.arm(settings.fault_point)
app = make_celery(settings, main="tiqu-trainer")
app.conf.update(kombu_redis.broker_settings(settings.redis_url))
# One run at a time and nothing reserved behind it: runs take minutes to hours,
# and a reserved run would wait on this worker while another one sits idle.
app.conf.update(worker_prefetch_multiplier=1)
train = register(app, settings)
correct = register_correct(app, settings)
# Inline training rows travel in the message, so the train queue takes larger
# messages than the extract queue; larger data goes by path ('data').
guard.install(app, None, settings.model_copy(update={
    "max_message_bytes": max(settings.max_message_bytes, TRAIN_MAX_MESSAGE_BYTES)}),
    allow_eta=True)  # tiqu.train retries with a countdown while a live run holds the lease
metrics.install(app, settings)  # /livez, /readyz and run progress on TIQU_METRICS_PORT
