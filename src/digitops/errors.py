"""User-facing errors: each says what is wrong and what to do.

The CLI turns a `DigitopsError` into one line on stderr and exit code 2, and so MLflow's client
giving up on its server (`tracking_unreachable`); anything else is a bug.
"""

import re


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


# How MLflow's client says it gave up on the server: no answer, as opposed to an HTTP error code
# ("failed with error code"), which names a request the server refused.
_GAVE_UP = re.compile(r"API request to (https?://[^/\s]+)\S* failed with exception (.*)")
_WHY = re.compile(r"\[Errno -?\d+\] ([\w ]+)|(timed out)|(Connection aborted)|(Remote end closed)")


def tracking_unreachable(message: str) -> str | None:
    """One line for an MLflow error message that says its server did not answer, else None."""
    gave_up = _GAVE_UP.search(message)
    if gave_up is None:
        return None
    why = _WHY.search(gave_up.group(2))
    reason = next(part for part in why.groups() if part) if why else "no answer"
    return (
        f"MLflow's tracking server at {gave_up.group(1)} did not answer ({reason.strip()}): "
        "start it, or check the tracking URI, and run again"
    )
