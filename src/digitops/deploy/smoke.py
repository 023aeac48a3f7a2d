"""The deploy smoke test: test digits posted to a deployed service's `/predict` over HTTP, as
users send them (PNG, dark ink on white, larger than 28×28); the stage keeps or drops the service.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np

from digitops.deploy import DeployError

UPSCALE = 2  # users' drawings are larger than MNIST's 28×28: the service must resize them


class SmokeResult(NamedTuple):
    """How the service answered: share of digits right, the model version it named, how many."""

    accuracy: float
    model_version: str
    images: int


def smoke_test(endpoint: str, images: np.ndarray, labels: np.ndarray, count: int) -> SmokeResult:
    """Post `count` test digits (a fixed random pick) to `endpoint`/predict; score the answers."""
    import httpx
    from PIL import Image

    right, version = 0, ""
    pick = np.random.default_rng(0).choice(len(labels), min(count, len(labels)), replace=False)
    size = (images.shape[2] * UPSCALE, images.shape[1] * UPSCALE)
    try:
        with httpx.Client(base_url=endpoint, timeout=30) as client:
            for i in pick:
                buffer = io.BytesIO()
                Image.fromarray(255 - images[i]).resize(size).save(buffer, "PNG")
                response = client.post("/predict", files={"file": ("digit.png", buffer.getvalue())})
                if response.status_code != 200:
                    raise DeployError(
                        f"{endpoint}/predict answered {response.status_code}: {response.text[:200]}"
                    )
                answer = response.json()
                right += answer["digit"] == str(labels[i])
                version = answer["model_version"]
    except (ValueError, KeyError, TypeError):  # not JSON, or not the service's answer shape
        raise DeployError(
            f"{endpoint}/predict: not a digitops answer ({response.text[:200]})"
        ) from None
    except httpx.HTTPError as exc:
        raise DeployError(
            f"{endpoint}: the smoke test could not reach the service: {exc}"
        ) from None
    return SmokeResult(right / len(pick), version, len(pick))
