"""Errors the model layer raises; the service maps each to one HTTP status."""


class ModelNotFound(Exception):
    """A model path that is not on local disk (reprank never downloads weights)."""


class InputTooLong(Exception):
    """An input over the model's max length when the caller did not allow truncation (413)."""


class DeadlineTooShort(Exception):
    """The request's own work, at the measured rate, takes longer than its deadline allows, even with
    nothing queued ahead of it (413: a retry cannot fix it; `fits` items would)."""

    def __init__(self, message: str, fits: int):
        super().__init__(message)
        self.fits = fits


class QueueFull(Exception):
    """The batcher's bounded queue cannot take the request now (429 with Retry-After)."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after
