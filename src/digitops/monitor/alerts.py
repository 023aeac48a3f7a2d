"""Telling people: one webhook call per pass that alerts, retrains, promotes or rejects.

The body is generic JSON with a `text` line, which is what a Slack (or Mattermost, Teams
workflow) incoming webhook shows; the other fields are for machines. A webhook that is down,
slow or refuses is named in one line and never stops the pass: the decision is recorded anyway.
"""

from __future__ import annotations

from typing import Any

import httpx


def notify(url: str, payload: dict[str, Any], timeout_s: float) -> str | None:
    """POST `payload` to `url`; None when it was taken (2xx), else what went wrong."""
    try:
        answer = httpx.post(url, json=payload, timeout=timeout_s, follow_redirects=False)
    except httpx.TimeoutException:
        return f"webhook {url}: no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        return f"webhook {url}: {exc.__class__.__name__} ({exc})"
    if not answer.is_success:
        return f"webhook {url}: answered {answer.status_code} {answer.text[:100]!r}"
    return None
