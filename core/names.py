"""Task, queue and Redis key names shared by producers, workers and trainer."""

EXTRACT_TASK = "tiqu.extract"
TRAIN_TASK = "tiqu.train"
#: Stores an operator's or upstream system's correction (queue ``train``).
CORRECT_TASK = "tiqu.correct"
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
#: Task ids with a field to review, scored by their lowest confidence, and the same
#: ids scored by the Unix time they were flagged (to expire them with the results).
REVIEW_KEY = KEY_PREFIX + "review"
REVIEW_AT_KEY = KEY_PREFIX + "review:at"
#: ``<prefix><task id>``: a flagged task's text, for the review page; result TTL.
REVIEW_TEXT_PREFIX = KEY_PREFIX + "review:text:"
#: Stream of corrections (labelled data, kept without TTL) and the hash of their
#: dedupe keys (sha256 of id and text) -> the latest stream entry id.
CORRECTIONS_KEY = KEY_PREFIX + "corrections"
CORRECTIONS_LATEST_KEY = KEY_PREFIX + "corrections:latest"


def result_key(task_id: str) -> str:
    return RESULT_KEY_PREFIX + task_id
