"""Small file helpers every stage shares: atomic directories and JSON, sha256 of files.

A stage writes its outputs into a temporary sibling directory and swaps it in only when complete,
so a failure never leaves half a dataset or a model directory that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from digitops.errors import DigitopsError

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` atomically (temp file + rename), making the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    """Read a JSON file written by a stage."""
    return json.loads(path.read_text())


def check_replaceable(out_dir: Path, marker: str) -> None:
    """Refuse an `out_dir` that `atomic_dir` would not replace: one that is not a directory, or
    holds files and no `marker` (not an earlier output of the same stage)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DigitopsError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / marker).exists():
            raise DigitopsError(
                f"{out_dir}: exists and is not an earlier output of this stage "
                f"(no {marker}); choose another output directory"
            )


@contextmanager
def atomic_dir(out_dir: Path, marker: str) -> Iterator[Path]:
    """Yield a temp directory that replaces `out_dir` only if the block completes.

    An existing `out_dir` is replaced only when it is empty or holds `marker` (i.e. it is an
    earlier output of the same stage); anything else is refused so user files are never lost.
    """
    out_dir = out_dir.resolve()
    check_replaceable(out_dir, marker)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
