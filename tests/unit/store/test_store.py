"""The request store: concurrent writers, labels that never overwrite silently, the cap, readers
that skip a broken line, and paths that cannot be a store."""

import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from digitops.data.current import load_current
from digitops.errors import StoreError
from digitops.serving.predictor import Prediction
from digitops.store.layout import (
    decode_embedding,
    image_from_bytes,
    image_hash,
    split_request_id,
)
from digitops.store.reader import (
    LiveAccuracy,
    labeled_images,
    labels_in_force,
    live_accuracy,
    open_store,
    read_blob,
    read_lines,
)
from digitops.store.writer import (
    BadLabel,
    Correction,
    LabelConflict,
    StoreFull,
    StoreWriter,
    UnknownRequest,
)

CLASSES = [str(d) for d in range(10)]


def prediction(digit: str = "7") -> Prediction:
    return Prediction(digit, 0.9, {digit: 0.9}, [{"digit": digit, "probability": 0.9}], False)


def digits(count: int, seed: int = 0) -> np.ndarray:
    images = np.zeros((count, 28, 28), np.uint8)
    rng = np.random.default_rng(seed)
    images[:, 6:22, 10:18] = rng.integers(0, 256, (count, 16, 8), dtype=np.uint8)
    return images


def keep(writer: StoreWriter, images: np.ndarray, version: str = "1") -> list[str]:
    uploads = [f"upload {i}".encode() for i in range(len(images))]
    embeddings = np.ones((len(images), 32), np.float32)
    return writer.record(
        images, uploads, [prediction()] * len(images), embeddings, "digits", version
    )


def files_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _write(uri: str, seed: int) -> None:
    writer = StoreWriter(uri, "service", segment_bytes=20_000)
    for i in range(25):
        keep(writer, digits(4, seed * 100 + i))


def test_four_writers_roll_segments_without_losing_or_splitting_a_record(tmp_path: Path):
    uri = str(tmp_path / "store")
    StoreWriter(uri, "service")  # made once, as `digitops serve` does before its workers
    writers = [
        multiprocessing.get_context("spawn").Process(target=_write, args=(uri, seed))
        for seed in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    segments = sorted((tmp_path / "store" / "records").rglob("*.jsonl"))
    assert len(segments) > 4, "segments rolled over by size"
    records = [json.loads(line) for s in segments for line in s.read_text().splitlines()]
    assert len(records) == 400 and len({r["request_id"] for r in records}) == 400
    backend = open_store(uri)
    for record in records:
        image = image_from_bytes(read_blob(backend, record["image_at"]))
        assert image_hash(image) == record["image"]  # the image is there, pixel-exact
        assert read_blob(backend, record["original_at"]).startswith(b"upload ")
    assert len(load_current(tmp_path / "store")) == 400  # drift reads the store


def test_a_record_is_found_by_its_request_id_and_names_its_image(tmp_path: Path):
    writer = StoreWriter(str(tmp_path / "store"), "service")
    images = digits(3)
    ids = keep(writer, images)
    record = writer.find(ids[1])
    assert record["image"] == image_hash(images[1]) and record["model_version"] == "1"
    assert len(decode_embedding(record["embedding"])) == 32 and record["upload_type"] == ".bin"
    (again,) = keep(writer, images[1:2])  # the same image (its upload is "upload 0"): kept once
    assert writer.find(again)["image_at"] == record["image_at"]
    assert writer.find(again)["original_at"] == writer.find(ids[0])["original_at"]
    with pytest.raises(UnknownRequest):
        writer.find(f"{split_request_id(ids[0])[0]}-99")
    with pytest.raises(UnknownRequest, match="not a request id"):
        writer.find("../../etc/passwd")


def test_a_label_is_never_overwritten_silently(tmp_path: Path):
    writer = StoreWriter(str(tmp_path / "store"), "service")
    (rid,) = keep(writer, digits(1))
    (first,) = writer.label([Correction(rid, "3", "web")], CLASSES)
    assert first["predicted"] == "7" and first["replaces"] is None
    with pytest.raises(LabelConflict, match="already labeled '3'") as conflict:
        writer.label([Correction(rid, "5", "api")], CLASSES)
    assert conflict.value.existing["label"] == "3"
    (second,) = writer.label([Correction(rid, "5", "api", replace=True)], CLASSES)
    assert second["replaces"] == "3"
    labels = read_lines(open_store(writer.uri), "labels/")
    assert [entry["label"] for entry in labels] == ["3", "5"]  # both kept
    assert labels_in_force(labels)[rid]["label"] == "5"


def test_a_batch_of_labels_is_kept_all_or_none(tmp_path: Path):
    writer = StoreWriter(str(tmp_path / "store"), "service")
    ids = keep(writer, digits(3))
    writer.label([Correction(ids[0], "1", "api")], CLASSES)
    before = files_digest(tmp_path / "store")
    bad_batches = [
        ([Correction(ids[1], "2", "api"), Correction(ids[0], "4", "api")], LabelConflict),
        ([Correction(ids[1], "2", "api"), Correction(ids[2], "12", "api")], BadLabel),
        (
            [Correction(ids[1], "2", "api"), Correction("20261202T000000-00000000-1", "2", "a")],
            UnknownRequest,
        ),
        ([Correction(ids[1], "2", "api"), Correction(ids[1], "3", "api")], LabelConflict),
    ]
    for batch, error in bad_batches:
        with pytest.raises(error):
            writer.label(batch, CLASSES)
    assert files_digest(tmp_path / "store") == before  # nothing changed
    assert (
        len(writer.label([Correction(ids[1], "2", "a"), Correction(ids[2], "3", "b")], CLASSES))
        == 2
    )


def test_the_cap_stops_new_records_and_deletes_nothing(tmp_path: Path):
    writer = StoreWriter(str(tmp_path / "store"), "service", cap_bytes=20_000)
    kept = []
    with pytest.raises(StoreFull, match="nothing is deleted"):
        for i in range(200):
            kept += keep(writer, digits(4, seed=i))
    assert kept
    for rid in kept:
        assert writer.find(rid)["request_id"] == rid
    # Labels still go in past the cap: they are small and what the store is for.
    writer.label([Correction(kept[0], "7", "api")], CLASSES)


def test_labeled_images_are_the_pixels_the_model_saw_one_per_image(tmp_path: Path):
    writer = StoreWriter(str(tmp_path / "store"), "service")
    images = digits(4)
    ids = keep(writer, images) + keep(writer, images[:1], version="2")  # image 0 seen twice
    writer.label([Correction(ids[0], "1", "a"), Correction(ids[2], "2", "a")], CLASSES)
    writer.label([Correction(ids[4], "8", "b")], CLASSES)  # the same image, labeled again
    found = labeled_images(writer.uri)
    assert found.request_ids == [ids[2], ids[4]] and found.labels == ["2", "8"]
    assert np.array_equal(found.images, images[[2, 0]])


def test_a_broken_line_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    writer = StoreWriter(str(tmp_path / "store"), "service")
    ids = keep(writer, digits(3))
    (segment,) = (tmp_path / "store" / "records").rglob("*.jsonl")
    with segment.open("a") as handle:
        handle.write('{"request_id": "x", "pred')  # a write cut short
    assert len(read_lines(open_store(writer.uri), "records/")) == 3
    assert "skipped 1 line(s)" in caplog.text
    assert writer.find(ids[2])["request_id"] == ids[2]


def test_paths_that_cannot_be_a_store_are_refused(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot be used as the request store"):
        StoreWriter(str(blocker / "store"), "service")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(StoreError, match="not a request store"):
        StoreWriter(str(other), "service")
    assert [p.name for p in other.iterdir()] == ["holiday.jpg"]  # left as it was
    with pytest.raises(StoreError, match="not a request store"):
        open_store(str(tmp_path / "never-made"))
    assert not (tmp_path / "never-made").exists()


def test_live_accuracy_carries_its_count_and_a_wilson_interval():
    labels = [
        {"request_id": f"r{i}", "time": i, "label": "7", "predicted": p, "model_version": v}
        for i, (p, v) in enumerate([("7", "1"), ("1", "1"), ("2", "1"), ("7", "2")])
    ]
    labels.append(
        {"request_id": "r1", "time": 9, "label": "1", "predicted": "1", "model_version": "1"}
    )  # r1 relabeled: now right
    one, two = live_accuracy(labels)
    assert (one.model_version, one.correct, one.labeled) == ("1", 2, 3)
    low, high = one.interval
    assert low == pytest.approx(0.2077, abs=1e-3) and high == pytest.approx(0.9385, abs=1e-3)
    assert two.labeled == 1 and two.interval[0] > 0.2 and two.interval[1] == 1.0
    assert LiveAccuracy("3", 0, 0).interval == (0.0, 1.0)
