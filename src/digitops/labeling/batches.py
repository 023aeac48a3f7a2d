"""Labeling batches: the stored requests `digitops select` picked, kept in the request store.

    queue/<batch id>.json   one batch: how it was picked, by which model, and per image its
                            request, the model's answer and its uncertainty scores

A batch is written once, whole. An image in a batch stays queued (no later batch picks it)
until it is labeled; an image labeled any way (/feedback, the web page, Label Studio) leaves
the pool.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitops.errors import DataError, StoreError
from digitops.labeling.select import Measure, Strategy, choose, score
from digitops.labeling.tasks import model_version
from digitops.model.artifact import OnnxClassifier
from digitops.store.backends import Backend
from digitops.store.layout import image_from_bytes, new_segment
from digitops.store.reader import labels_in_force, open_store, read_blob, read_lines

QUEUE = "queue/"
POOL_LIMIT = 20_000  # the pool: unlabeled images of at most this many latest requests
_BATCH_FIELDS = ("batch", "pool", "model_name", "model_version", "items")
_ITEM_FIELDS = ("request_id", "image", "image_at", "predicted", "confidence", "uncertainty")


@dataclass(frozen=True)
class Model:
    """The model that scores the pool (and pre-annotates the batch)."""

    classifier: OnnxClassifier
    name: str
    version: str


@dataclass(frozen=True)
class Batch:
    """A batch as `queue/<batch id>.json` holds it, and the store it is in."""

    uri: str
    content: dict[str, Any]

    @property
    def batch_id(self) -> str:
        return str(self.content["batch"])

    @property
    def pool(self) -> int:
        """Unlabeled, unqueued images the batch was picked from."""
        return int(self.content["pool"])

    @property
    def items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.content["items"]
        return items

    @property
    def model_version(self) -> str:
        """The version that scored the batch, as Label Studio names it."""
        return model_version(self.content["model_name"], self.content["model_version"])


def select(
    uri: str,
    model: Model,
    budget: int,
    strategy: Strategy = "uncertainty-diversity",
    measure: Measure = "margin",
    seed: int = 0,
    pool_limit: int = POOL_LIMIT,
    requeue: bool = False,
) -> Batch:
    """Pick `budget` unlabeled images of the store at `uri` (not queued in an earlier batch,
    unless `requeue`) and queue them."""
    if budget < 1:
        raise DataError(f"--budget {budget}: pick at least one image")
    backend = open_store(uri)
    candidates = _pool(backend, pool_limit, requeue)
    if not candidates:
        raise DataError(
            f"{uri}: every image of the latest {pool_limit} requests is labeled or queued; "
            "nothing to select (--requeue picks among queued ones again)"
        )
    try:
        images = _images(backend, candidates)
    except StoreError as exc:
        raise StoreError(f"{exc}; nothing was queued") from None
    logits, embeddings = model.classifier.outputs(images)
    if strategy == "uncertainty-diversity" and embeddings is None:
        raise DataError(
            f"{model.name} version {model.version} has no embedding output (exported before "
            "digitops 0.1 stored embeddings); use --strategy uncertainty, or a newer model"
        )
    scores = score(model.classifier.calibrated(logits))
    chosen = choose(scores, embeddings, budget, strategy, measure, seed)
    doubt = scores.uncertainty(measure)
    names = model.classifier.class_names
    batch_id = new_segment()
    content = {
        "batch": batch_id,
        "time": time.time(),
        "strategy": strategy,
        "measure": measure,
        "seed": seed,
        "model_name": model.name,
        "model_version": model.version,
        "pool": len(candidates),
        "items": [
            {
                "request_id": candidates[i]["request_id"],
                "image": candidates[i]["image"],
                "image_at": candidates[i]["image_at"],
                "predicted": names[scores.predicted[i]],
                "confidence": round(float(scores.confidence[i]), 6),
                "margin": round(float(scores.margin[i]), 6),
                "entropy": round(float(scores.entropy[i]), 6),
                "uncertainty": round(float(doubt[i]), 6),
            }
            for i in chosen
        ],
    }
    backend.put(f"{QUEUE}{batch_id}.json", (json.dumps(content, indent=1) + "\n").encode())
    return Batch(uri, content)


def load_batch(uri: str, batch_id: str) -> Batch:
    """A batch `select` wrote ('latest': the newest)."""
    backend = open_store(uri)
    batches = _batches(backend)
    if not batches:
        raise DataError(f"{uri}: no labeling batch yet (digitops select)")
    if batch_id == "latest":
        return batches[-1]
    for batch in batches:
        if batch.batch_id == batch_id:
            return batch
    known = ", ".join(b.batch_id for b in batches[-3:])
    raise DataError(f"{uri}: no batch '{batch_id}' (latest: {known})")


def batch_images(batch: Batch) -> np.ndarray:
    """The batch's images, N×28×28 uint8; `StoreError` naming the request whose image is gone."""
    return _images(open_store(batch.uri), batch.items)


def _batches(backend: Backend) -> list[Batch]:
    found = []
    for key in backend.keys(QUEUE):
        if key.endswith(".json") and (data := backend.get(key)) is not None:
            try:
                content = json.loads(data)
            except ValueError:
                content = None
            if not _is_batch(content):
                raise StoreError(f"{backend.uri}: {key} is not a whole batch")
            found.append(Batch(backend.uri, content))
    return sorted(found, key=lambda b: b.batch_id)


def _is_batch(content: Any) -> bool:
    """Whether `content` has every field `select` and `push` read."""
    items = content.get("items") if isinstance(content, dict) else None
    return (
        isinstance(items, list)
        and all(name in content for name in _BATCH_FIELDS)
        and all(isinstance(i, dict) and all(name in i for name in _ITEM_FIELDS) for i in items)
    )


def _pool(backend: Backend, limit: int, requeue: bool) -> list[dict[str, Any]]:
    """The first request (of the latest `limit`) of each stored image that is neither labeled
    nor, unless `requeue`, queued."""
    records = read_lines(backend, "records/")[-limit:]
    labeled = {entry["image"] for entry in labels_in_force(read_lines(backend, "labels/")).values()}
    batches = [] if requeue else _batches(backend)
    queued = {item["image"] for batch in batches for item in batch.items}
    pool: dict[str, dict[str, Any]] = {}
    for record in records:
        digest = record["image"]
        if digest not in labeled and digest not in queued:
            pool.setdefault(digest, record)
    return list(pool.values())


def _images(backend: Backend, records: list[dict[str, Any]]) -> np.ndarray:
    """The stored images `records` name, N×28×28 uint8; `StoreError` naming the first request
    whose image is gone or unreadable."""
    images = []
    for record in records:
        try:
            images.append(image_from_bytes(read_blob(backend, record["image_at"])))
        except (OSError, ValueError, StoreError) as exc:
            raise StoreError(
                f"{backend.uri}: the image of request {record['request_id']} is gone or "
                f"unreadable ({exc})"
            ) from None
    return np.stack(images)
