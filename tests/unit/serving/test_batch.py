"""Batch inference over a folder or an S3 prefix: one row per image with the service's answer,
unreadable files named in their row, user errors as one line and no output file."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from digitops.cli import app
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.errors import DataError, DigitopsError, ModelError
from digitops.model.artifact import (
    INPUT_NAME,
    INPUT_SPEC,
    MODEL_ONNX,
    OUTPUT_NAME,
    CardDataset,
    CardMetrics,
    ModelCard,
)
from digitops.serving.batch import score
from digitops.serving.predictor import load_predictor
from digitops.serving.preprocess import preprocess

from ...serving_helpers import aws_env, png, running_moto, s3_client

CLASSES = [str(k) for k in range(10)]
COLUMNS = ["path", "digit", "confidence", *(f"p{k}" for k in CLASSES)]
COLUMNS += ["model_name", "model_version", "error"]
DIGITS = 12  # MNIST test digits in the folder: 11 as PNG, 1 as JPEG
UNREADABLE = {  # and the files that are no image the service reads, with their rows' errors
    "b/broken.png": "the image is truncated or corrupt",
    "Old.GIF": "not an image in a supported format (PNG, JPEG, BMP, WEBP)",
}


def centroid_model(directory: Path) -> Path:
    """A real ONNX model directory built in well under a second (no training): the nearest mean
    of each class over 10,000 MNIST training digits, logits x·μₖ − ½‖μₖ‖² (about 85 % right)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mnist = load_idx_dir(BUNDLED_MNIST)
    x = mnist.train_images[:10_000].reshape(-1, 784).astype(np.float32) / 255
    labels = mnist.train_labels[:10_000]
    means = np.stack([x[labels == k].mean(axis=0) for k in range(10)])
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [INPUT_NAME], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["scores"]),
            helper.make_node("Add", ["scores", "bias"], [OUTPUT_NAME]),
        ],
        "centroids",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(means.T.copy(), "weights"),
            numpy_helper.from_array(-0.5 * (means**2).sum(axis=1).astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    directory.mkdir(parents=True)
    onnx.save(model, directory / MODEL_ONNX)
    ModelCard(
        architecture="NearestCentroid",
        parameters=means.size + 10,
        input={"name": INPUT_NAME, "spec": INPUT_SPEC},
        output={"name": OUTPUT_NAME, "classes": 10},
        class_names=CLASSES,
        normalization={"applied_inside_model": True},
        hyperparameters={},
        augmentation={},
        dataset=CardDataset(version="mnist-10k", path=str(BUNDLED_MNIST), sizes={"train": 10_000}),
        metrics=CardMetrics(val_accuracy=0.85, epochs=0, train_seconds=0.0),
        onnx={},
        mlflow_run_id=None,
        digitops_version="test",
    ).write(directory)
    return directory


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(255 - image).resize((112, 112)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def image_folder(root: Path) -> dict[str, tuple[bytes, int]]:
    """MNIST test digits as users keep them (PNG in two folders, one JPEG with an upper-case
    suffix), a truncated PNG, a GIF and a note that is no image; the files by relative path, with
    the digit each shows (-1: unreadable)."""
    mnist = load_idx_dir(BUNDLED_MNIST)
    files = {}
    for i in range(DIGITS):
        image, label = mnist.test_images[i], int(mnist.test_labels[i])
        name = f"scans/{i:02d}.JPG" if i == 5 else f"{'a' if i % 2 else 'b'}/{i:02d}.png"
        files[name] = (jpeg(image) if i == 5 else png(image), label)
    files["b/broken.png"] = (png(mnist.test_images[DIGITS])[:300], -1)  # cut off mid-way
    gif = io.BytesIO()
    Image.fromarray(mnist.test_images[DIGITS]).save(gif, "GIF")
    files["Old.GIF"] = (gif.getvalue(), -1)  # listed, but the service reads no GIF
    for name, (data, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("not an image: left out")
    return files


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return centroid_model(tmp_path_factory.mktemp("batch") / "model")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    root = tmp_path_factory.mktemp("images")
    return root, image_folder(root)


def assert_answers(rows: pd.DataFrame, model: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Each image's row holds the service's answer for the same bytes; the corrupt one its error."""
    assert list(rows.columns) == COLUMNS
    assert list(rows["path"]) == sorted(files), "one row per image, sorted by path"
    predictor = load_predictor(str(model))
    right = 0
    for row in rows.itertuples():
        data, label = files[row.path]
        error = row.error if isinstance(row.error, str) else ""  # CSV: NaN, Parquet: ""
        if label < 0:
            assert error == UNREADABLE[row.path]
            assert pd.isna(row.digit) and pd.isna(row.confidence) and pd.isna(row.p0)
            continue
        (expected,) = predictor.predict(preprocess(data)[None])
        assert str(row.digit) == expected.digit and error == ""
        assert row.confidence == pytest.approx(expected.confidence, abs=1e-6)
        probabilities = [getattr(row, f"p{k}") for k in CLASSES]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert row.confidence == pytest.approx(max(probabilities))
        right += str(row.digit) == str(label)
    assert right >= DIGITS - 3, f"only {right} of {DIGITS} digits read right"
    assert set(rows["model_name"]) == {"local"} and set(rows["model_version"]) == {"local"}


def test_a_folder_becomes_one_csv_row_per_image_with_errors_in_their_rows(model, folder, tmp_path):
    root, files = folder
    out = tmp_path / "answers.csv"
    done = score(str(model), str(root), out, batch_size=5)  # three model calls, one short
    assert (done.images, done.failed, done.out) == (DIGITS + 2, 2, out)
    assert (done.model_name, done.model_version) == ("local", "local")
    rows = pd.read_csv(out, dtype={"digit": str, "error": str})
    assert_answers(rows, model, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.csv"], "no temporary file left"


def test_parquet_holds_the_same_answers_with_nulls_for_unreadable_files(model, folder, tmp_path):
    root, files = folder
    csv_rows = pd.read_csv(score(str(model), str(root), tmp_path / "a.csv").out, dtype=str)
    out = tmp_path / "a.PARQUET"
    score(str(model), str(root), out, batch_size=1000)
    rows = pd.read_parquet(out)
    assert rows.dtypes["confidence"] == "float64" and rows.dtypes["p9"] == "float64"
    assert rows.loc[rows["path"] == "b/broken.png", "digit"].isna().all()
    assert_answers(rows, model, files)
    assert list(rows["digit"].fillna("")) == list(csv_rows["digit"].fillna(""))
    assert np.allclose(
        rows["confidence"].fillna(-1), csv_rows["confidence"].astype(float).fillna(-1)
    )


@pytest.mark.parametrize(
    ("source", "out", "error", "message"),
    [
        ("missing", "a.csv", DataError, "missing: no such folder"),
        ("empty", "a.csv", DataError, "no images in it"),
        ("notes.txt", "a.csv", DataError, "notes.txt: is not a folder"),
        ("images", "a.json", DigitopsError, "a.json: the output is a .csv or .parquet file"),
        ("images", "answers", DigitopsError, "the output is a .csv or .parquet file"),
    ],
)
def test_a_bad_source_or_output_is_one_clear_error_and_no_file(
    model, folder, tmp_path, source, out, error, message
):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no image")
    (tmp_path / "notes.txt").write_text("no image")
    given = str(folder[0]) if source == "images" else str(tmp_path / source)
    results = tmp_path / "results"
    with pytest.raises(error, match=message):
        score(str(model), given, results / out)
    assert not results.exists()


def test_a_model_that_cannot_be_loaded_is_a_model_error_and_no_file(folder, tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelError, match="not-a-model: not a model directory"):
        score(str(tmp_path / "not-a-model"), str(folder[0]), tmp_path / "out" / "a.csv")
    assert not (tmp_path / "out").exists()


def test_the_command_prints_a_summary_or_one_error_line_with_exit_2(model, folder, tmp_path):
    out = tmp_path / "answers.parquet"
    runner = CliRunner()
    args = ["batch-predict", str(folder[0]), "--model", str(model), "--out", str(out)]
    done = runner.invoke(app, [*args, "--batch-size", "4"])
    assert done.exit_code == 0, done.output
    expected = f"scored {DIGITS + 2} images (2 unreadable) with local version local -> {out}"
    assert done.stdout.strip() == expected
    assert len(pd.read_parquet(out)) == DIGITS + 2
    bad = ["batch-predict", str(tmp_path / "nowhere"), "--model", str(model)]
    bad += ["--out", str(tmp_path / "x.csv")]
    done = runner.invoke(app, bad)
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such folder; name a folder or an "
        "s3://bucket/prefix of images"
    ]
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.integration  # starts moto's S3 server
def test_an_s3_prefix_is_scored_like_the_same_folder(model, folder, tmp_path, monkeypatch):
    root, files = folder
    with running_moto(tmp_path) as endpoint:
        for key, value in aws_env(endpoint).items():
            monkeypatch.setenv(key, value)
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="uploads")
        for name, (data, _) in files.items():
            s3.put_object(Bucket="uploads", Key=f"digits/{name}", Body=data)
        s3.put_object(Bucket="uploads", Key="digits-2/c/x.png", Body=files["a/01.png"][0])
        s3.put_object(Bucket="uploads", Key="digits/notes.txt", Body=b"left out")
        done = score(str(model), "s3://uploads/digits", tmp_path / "s3.csv")
        with pytest.raises(DataError, match="s3://uploads/nothing: no images in it"):
            score(str(model), "s3://uploads/nothing", tmp_path / "none.csv")
    assert (done.images, done.failed) == (DIGITS + 2, 2)
    from_s3 = pd.read_csv(done.out, dtype=str)
    from_folder = pd.read_csv(score(str(model), str(root), tmp_path / "local.csv").out, dtype=str)
    pd.testing.assert_frame_equal(from_s3, from_folder)
    assert not (tmp_path / "none.csv").exists()
