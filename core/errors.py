"""One error tree for tiqu. Every error carries a stable ``code`` for envelopes."""


class TiquError(Exception):
    """Base of every error tiqu raises on purpose."""

    code = "internal_error"


class InvalidInput(TiquError):
    """A task payload that cannot be extracted from (empty, too long, wrong type)."""

    code = "invalid_payload"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidModelOutput(TiquError):
    """The model produced text that is not a valid Complaint."""

    code = "invalid_model_output"

    def __init__(self, message: str, raw_len: int = 0) -> None:
        super().__init__(message)
        self.raw_len = raw_len


class IncompatibleAdapter(TiquError):
    """An adapter whose manifest does not match the serving base model or prompt."""

    code = "incompatible_adapter"


class ModelNotFound(TiquError):
    """The configured base model or adapter is missing on this machine."""

    code = "model_not_found"


class ConfigError(TiquError):
    """Settings that cannot work together; the message lists every problem."""

    code = "config_error"


class DataError(TiquError):
    """A data set with bad rows; the message lists the rows."""

    code = "bad_data"
