"""Label Studio's formats, as digitops writes and reads them: the labeling config, tasks,
pre-annotations (predictions) and annotations. No SDK here: the service's ML backend
(`digitops.serving.label_studio`) speaks these formats too.

A task's data names the stored request it shows (`request_id`), so an annotation finds its
way back to the prediction it labels, and the ML backend reads the image the model saw from
the store rather than fetching it.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
from typing import Any
from xml.etree import ElementTree  # the config comes from Label Studio; expat refuses entity bombs

import numpy as np
from PIL import Image

CLASSES = [str(digit) for digit in range(10)]
IMAGE = "image"  # the Image tag's name and the task data key it shows
CHOICES = "digit"  # the Choices tag's name
SCALE = 10  # a stored 28×28 image is shown at 280×280 (each pixel a 10×10 square)


def model_version(name: str, version: str) -> str:
    """A model version as Label Studio names it (pre-annotations, the project, the backend)."""
    return f"{name}/{version}"


def labeling_config(classes: list[str] = CLASSES) -> str:
    """One image, one choice among the classes."""
    choices = "".join(f'<Choice value="{name}"/>' for name in classes)
    return (
        f'<View><Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>'
        f'<Choices name="{CHOICES}" toName="{IMAGE}" choice="single-radio" showInline="true">'
        f"{choices}</Choices></View>"
    )


def control_names(config: str) -> tuple[str, str, str]:
    """(Choices name, Image name, task data key of the image) of a labeling config: the ML
    backend answers whatever names a project uses; ValueError when it has no such pair."""
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as exc:
        raise ValueError(f"the labeling config is not valid XML ({exc})") from None
    images = {tag.get("name"): tag.get("value", "") for tag in root.iter("Image")}
    for choices in root.iter("Choices"):
        target = choices.get("toName")
        if target in images and images[target].startswith("$") and choices.get("name"):
            return str(choices.get("name")), str(target), images[target][1:]
    raise ValueError("the labeling config has no <Choices> for an <Image> (a digit classifier's)")


def prediction(
    digit: str, score: float, model_version: str, names: tuple[str, str] = (CHOICES, IMAGE)
) -> dict[str, Any]:
    """A pre-annotation: the model's answer, with its confidence as the score."""
    from_name, to_name = names
    return {
        "model_version": model_version,
        "score": round(float(score), 6),
        "result": [
            {
                "from_name": from_name,
                "to_name": to_name,
                "type": "choices",
                "value": {"choices": [digit]},
            }
        ],
    }


def choice_of(result: list[dict[str, Any]]) -> str | None:
    """The class an annotation's result chose (None when it chose none)."""
    for region in result:
        if region.get("from_name") == CHOICES and region.get("type") == "choices":
            chosen = region.get("value", {}).get("choices") or []
            return "|".join(map(str, chosen)) or None  # several choices: not one class
    return None


def image_png(image: np.ndarray, scale: int = SCALE) -> bytes:
    """A stored 28×28 uint8 image as a PNG, each pixel `scale`×`scale` (dark ink on white, as
    people write)."""
    big = np.kron(255 - np.asarray(image, np.uint8), np.ones((scale, scale), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


class Credentials:
    """The `Authorization` header Label Studio takes for an API key: a legacy token as it is; a
    personal access token (a JWT refresh token) exchanged at `/api/token/refresh` for an access
    token of five minutes, renewed before it lapses. Plain urllib: the service's ML backend
    shares this and the Lambda image has no httpx. Raises `OSError`s when the exchange fails
    (`urllib.error.HTTPError` 401: a refused key; `URLError`, `TimeoutError`: Label Studio
    unreachable), `ValueError` or `KeyError` when it answers something else."""

    RENEW_S = 240.0

    def __init__(self, url: str, key: str, timeout_s: float = 10.0) -> None:
        self.url, self.key, self.timeout_s = url.rstrip("/"), key, timeout_s
        self._access: tuple[str, float] | None = None

    def header(self) -> str:
        if self.key.count(".") != 2:  # not a JWT: a legacy token
            return f"Token {self.key}"
        if self._access is None or self._access[1] < time.monotonic():
            request = urllib.request.Request(
                f"{self.url}/api/token/refresh",
                data=json.dumps({"refresh": self.key}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                access = str(json.loads(answer.read())["access"])
            self._access = (access, time.monotonic() + self.RENEW_S)
        return f"Bearer {self._access[0]}"
