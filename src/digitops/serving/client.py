"""`digitops predict`: the same answers locally (the predictor in-process) or from a service."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from digitops.errors import DigitopsError


def read_files(paths: Iterable[Path]) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image file; an unreadable file is a user error."""
    inputs = []
    for path in paths:
        try:
            inputs.append((str(path), path.read_bytes()))
        except OSError as exc:
            raise DigitopsError(f"{path}: cannot read ({exc.strerror})") from None
    return inputs


def describe(answer: dict[str, Any]) -> str:
    """One line for an answer: `7 (0.998; top 3: 7 1.00, 1 0.00, 2 0.00)`, or for one below
    the confidence floor `unsure, maybe 7 (0.412; ...)`."""
    top3 = ", ".join(f"{t['digit']} {t['probability']:.2f}" for t in answer["top3"])
    digit = f"unsure, maybe {answer['digit']}" if answer.get("unsure") else answer["digit"]
    return f"{digit} ({answer['confidence']:.3f}; top 3: {top3})"


def predict_files(
    inputs: Iterable[tuple[str, bytes]], url: str | None, model: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, answer) for each (name, image bytes); answers are the service's JSON shape."""
    if url:
        yield from _remote(inputs, url.rstrip("/"))
        return
    from dataclasses import asdict

    from digitops.serving.predictor import load_predictor
    from digitops.serving.preprocess import ImageError, preprocess

    predictor = load_predictor(model)
    for name, data in inputs:
        try:
            (prediction,) = predictor.predict(preprocess(data)[None])
        except ImageError as exc:
            raise DigitopsError(f"{name}: {exc}") from None
        yield name, asdict(prediction) | {"model_version": predictor.version}


def _remote(inputs: Iterable[tuple[str, bytes]], url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import httpx

    with httpx.Client(timeout=30) as client:
        for name, data in inputs:
            try:
                response = client.post(f"{url}/predict", files={"file": (name, data)})
            except httpx.HTTPError as exc:
                raise DigitopsError(f"{url}: cannot reach the service ({exc})") from None
            body = response.json()
            if response.status_code != 200:
                raise DigitopsError(f"{name}: {body.get('error', response.text)}")
            yield name, body


def camera_frames(index: int, count: int) -> list[tuple[str, bytes]]:
    """`count` frames of webcam `index` as PNG bytes."""
    try:
        import cv2
    except ImportError:  # no extra declares OpenCV: the camera is an add-on
        raise DigitopsError("--camera needs OpenCV: pip install opencv-python-headless") from None

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise DigitopsError(f"camera {index}: cannot be opened")
    frames = []
    try:
        for i in range(count):
            ok, frame = capture.read()
            if not ok:
                raise DigitopsError(f"camera {index}: no frame after {i} frames")
            frames.append((f"camera{index}-frame{i}", cv2.imencode(".png", frame)[1].tobytes()))
    finally:
        capture.release()
    return frames
