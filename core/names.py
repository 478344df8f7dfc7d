"""Task, queue and Redis key names shared by producers, workers and trainer."""

EXTRACT_TASK = "tiqu.extract"
TRAIN_TASK = "tiqu.train"
EXTRACT_QUEUE = "extract"
TRAIN_QUEUE = "train"

#: Celery's result backend key for a task id (``celery-task-meta-<id>``).
RESULT_KEY_PREFIX = "celery-task-meta-"

#: Redis key prefix for everything tiqu itself stores (registry, worker state).
KEY_PREFIX = "tiqu:"
ACTIVE_ADAPTER_KEY = KEY_PREFIX + "adapters:active"
#: Queue items refused without a usable task id: ``{reason, size, queue, at}``, no body.
DEAD_LETTER_KEY = KEY_PREFIX + "deadletter"
#: Most entries kept on the dead-letter list (LTRIM), so it cannot grow without bound.
DEAD_LETTER_MAX = 10000


def result_key(task_id: str) -> str:
    return RESULT_KEY_PREFIX + task_id
