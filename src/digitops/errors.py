"""User-facing errors: each says what is wrong and what to do.

The CLI turns a `DigitopsError` into one line on stderr and exit code 2; anything else is a bug.
"""


class DigitopsError(Exception):
    """A failure caused by the user's input or environment, not by a bug."""


class ConfigError(DigitopsError):
    """A configuration file or `--set` override is invalid."""


class DataError(DigitopsError):
    """Input data is missing, corrupt, or not what the stage expects."""


class ModelError(DigitopsError):
    """A model directory is missing, incomplete, or does not fit the data."""


class StoreError(DigitopsError):
    """The request store cannot be opened, read or written."""
