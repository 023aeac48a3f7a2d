"""The dataset directory, the contract between `prepare` and every later stage.

Layout: train/val/test `.npz` (uint8 images N×28×28, int64 labels), `augment.json`,
`stats.json`, and `manifest.json` (sha256 of every file; its own hash is the dataset version).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.errors import DataError
from digitops.fileio import atomic_dir, file_sha256, write_json

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
RECORDS = "records.json"  # with a request-store source: which production requests went in
STATS = "stats.json"
AUGMENT = "augment.json"


@dataclass(frozen=True)
class Split:
    """One split: images N×28×28 uint8 and labels N int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def write_dataset(
    out_dir: Path,
    splits: dict[str, Split],
    class_names: list[str],
    augment_spec: dict[str, Any],
    source: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a complete dataset directory atomically and return its manifest (`extra`: more
    JSON files by name, such as `records.json`, covered by the manifest like the rest)."""
    with atomic_dir(out_dir, marker=MANIFEST) as tmp:
        for name, split in splits.items():
            np.savez_compressed(tmp / f"{name}.npz", images=split.images, labels=split.labels)
        write_json(tmp / AUGMENT, augment_spec)
        for name, content in (extra or {}).items():
            write_json(tmp / name, content)
        write_json(tmp / STATS, compute_stats(splits, class_names))
        files = {
            p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.iterdir())
        }
        manifest = {
            "version": _version(files),
            "files": files,
            "sizes": {name: len(split) for name, split in splits.items()},
            "num_classes": len(class_names),
            "class_names": class_names,
            "image_shape": list(splits["train"].images.shape[1:]),
            "source": source,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


def compute_stats(splits: dict[str, Split], class_names: list[str]) -> dict[str, Any]:
    """Normalisation constants of the training split and per-split class counts."""
    train = splits["train"].images.astype(np.float32) / 255.0
    return {
        "mean": float(train.mean()),
        "std": float(train.std()),
        "class_counts": {
            name: np.bincount(s.labels, minlength=len(class_names)).tolist()
            for name, s in splits.items()
        },
        "mean_intensity": {name: float(s.images.mean() / 255.0) for name, s in splits.items()},
    }


def _version(files: dict[str, dict[str, Any]]) -> str:
    lines = "".join(f"{info['sha256']}  {name}\n" for name, info in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class Dataset:
    """A verified dataset directory."""

    root: Path
    manifest: dict[str, Any]
    stats: dict[str, Any]
    augment_spec: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    def split(self, name: str) -> Split:
        """Load one split from its `.npz` file."""
        with np.load(self.root / f"{name}.npz") as npz:
            return Split(images=npz["images"], labels=npz["labels"].astype(np.int64))


def load_dataset(root: Path, verify: bool = True) -> Dataset:
    """Open a dataset directory, checking every file against the manifest."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{root}: not a dataset directory (no {MANIFEST}); run `digitops prepare`")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(
            f"{manifest_path}: unreadable manifest; run `digitops prepare` again"
        ) from None
    for name, info in files.items():
        path = root / name
        if not path.is_file():
            raise DataError(f"{path}: missing from the dataset; run `digitops prepare` again")
        if verify and file_sha256(path) != info["sha256"]:
            raise DataError(
                f"{path}: checksum differs from {MANIFEST} — the dataset was "
                f"modified or is corrupt; run `digitops prepare` again"
            )
    stats = json.loads((root / STATS).read_text())
    augment_spec = json.loads((root / AUGMENT).read_text())
    return Dataset(root=root, manifest=manifest, stats=stats, augment_spec=augment_spec)
