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


# How MLflow's client says it gave up on the server ("failed with exception": no usable answer
# after its retries), as opposed to an HTTP error code ("failed with error code"), which names a
# request the server refused. The URI is what precedes MLflow's REST path.
_GAVE_UP = re.compile(
    r"API request to (https?://\S+?)/(?:ajax-)?api/\S* failed with exception (.*)"
)
_NO_ANSWER = re.compile(
    r"\[Errno -?\d+\] ([\w ]+)|(timed out)|(Connection aborted)|(Remote end closed)"
)
_ERRORS = re.compile(r"too many \d+ error responses")


def tracking_unreachable(message: str) -> str | None:
    """One line for an MLflow error message that says its server could not be used, else None."""
    gave_up = _GAVE_UP.search(message)
    if gave_up is None:
        return None
    server, detail = gave_up.groups()
    if errors := _ERRORS.search(detail):
        what = f"kept failing ({errors.group(0)})"
    elif "SSLError" in detail or "CERTIFICATE" in detail:
        what = "could not be verified (TLS: check its certificate)"
    elif why := _NO_ANSWER.search(detail):
        what = f"did not answer ({next(part for part in why.groups() if part).strip()})"
    else:
        what = "did not answer"
    return (
        f"MLflow's tracking server at {server} {what}: start it, or check the tracking URI, "
        "and run again"
    )
