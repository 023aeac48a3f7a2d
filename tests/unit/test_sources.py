from pathlib import Path

import numpy as np
import pytest

from digitops.config import load_config
from digitops.data.dataset import load_dataset
from digitops.data.idx import load_idx_dir
from digitops.data.sources import bundled_mnist_dir
from digitops.errors import DataError, DigitopsError
from digitops.stages import prepare

from ..helpers import write_image_folder, write_sign_csv

# Sign Language MNIST: labels 0..24 without 9 (J needs motion), 24 classes.
SIGN_LABELS = [i for i in range(25) if i != 9]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    idx = load_idx_dir(bundled_mnist_dir())
    return idx.test_images[:960], idx.test_labels[:960]


def cfg(*overrides: str):
    return load_config(None, list(overrides))


def test_csv_source_takes_classes_from_the_data(tmp_path: Path, digits):
    images, _ = digits
    labels = [SIGN_LABELS[i % 24] for i in range(len(images))]
    write_sign_csv(tmp_path / "sign.csv", images, labels)
    result = prepare.run(cfg(f"prepare.source={tmp_path / 'sign.csv'}"), tmp_path / "ds")
    assert result.class_names == [str(i) for i in SIGN_LABELS]
    ds = load_dataset(tmp_path / "ds")
    assert ds.manifest["num_classes"] == 24
    assert sum(result.images.values()) == len(images)
    train = ds.split("train")
    assert train.images.shape[1:] == (28, 28) and train.labels.max() == 23


def test_csv_with_separate_test_file(tmp_path: Path, digits):
    images, labels = digits
    write_sign_csv(tmp_path / "train.csv", images[:800], labels[:800].tolist())
    write_sign_csv(tmp_path / "test.csv", images[800:], labels[800:].tolist())
    result = prepare.run(
        cfg(
            f"prepare.source={tmp_path / 'train.csv'}",
            f"prepare.test_source={tmp_path / 'test.csv'}",
        ),
        tmp_path / "ds",
    )
    assert result.images["test"] == 160


def test_test_label_unknown_to_training_data_is_an_error(tmp_path: Path, digits):
    images, _ = digits
    write_sign_csv(tmp_path / "train.csv", images[:100], [0, 1] * 50)
    write_sign_csv(tmp_path / "test.csv", images[100:110], [0, 1, 2, 0, 1, 0, 1, 0, 1, 0])
    with pytest.raises(DataError, match=r"test label\(s\) \['2'\] are not among"):
        prepare.run(
            cfg(
                f"prepare.source={tmp_path / 'train.csv'}",
                f"prepare.test_source={tmp_path / 'test.csv'}",
            ),
            tmp_path / "ds",
        )


def test_csv_with_wrong_columns_is_an_error(tmp_path: Path):
    (tmp_path / "bad.csv").write_text("label,a,b\n1,2,3\n")
    with pytest.raises(DataError, match="784"):
        prepare.run(cfg(f"prepare.source={tmp_path / 'bad.csv'}"), tmp_path / "ds")


def test_image_folder_source(tmp_path: Path, digits):
    images, labels = digits
    write_image_folder(tmp_path / "imgs", images[:200], labels[:200])
    result = prepare.run(cfg(f"prepare.source={tmp_path / 'imgs'}"), tmp_path / "ds")
    assert result.class_names == [str(i) for i in range(10)]
    assert sum(result.images.values()) == 200
    test = load_dataset(tmp_path / "ds").split("test")
    assert test.images.dtype == np.uint8 and test.images.shape[1:] == (28, 28)


def test_empty_image_folder_is_an_error(tmp_path: Path):
    (tmp_path / "imgs" / "3").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        prepare.run(cfg(f"prepare.source={tmp_path / 'imgs'}"), tmp_path / "ds")


def test_unreadable_image_is_named(tmp_path: Path):
    (tmp_path / "imgs" / "3").mkdir(parents=True)
    (tmp_path / "imgs" / "3" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x.png: not a readable image"):
        prepare.run(cfg(f"prepare.source={tmp_path / 'imgs'}"), tmp_path / "ds")


def test_hidden_files_and_folders_are_not_data(tmp_path: Path, digits):
    images, labels = digits
    write_image_folder(tmp_path / "imgs", images[:100], labels[:100])
    # A notebook's checkpoints and a desktop's metadata beside the class folders.
    write_image_folder(tmp_path / "imgs" / ".ipynb_checkpoints", images[:5], labels[:5])
    (tmp_path / "imgs" / "3" / ".DS_Store.png").write_bytes(b"not an image")
    result = prepare.run(cfg(f"prepare.source={tmp_path / 'imgs'}"), tmp_path / "ds")
    assert result.class_names == [str(i) for i in range(10)]
    assert sum(result.images.values()) == 100


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_training_image_is_an_error_not_data(tmp_path: Path, digits, fmt: str):
    import io

    from PIL import Image

    images, labels = digits
    write_image_folder(tmp_path / "imgs", images[:20], labels[:20])
    buffer = io.BytesIO()
    Image.fromarray(images[0]).resize((280, 280)).save(buffer, fmt)
    cut = tmp_path / "imgs" / str(labels[0]) / f"cut.{fmt.lower()}"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match=rf"cut.{fmt.lower()}: not a readable image"):
        prepare.run(cfg(f"prepare.source={tmp_path / 'imgs'}"), tmp_path / "ds")


def test_16_bit_training_image_keeps_its_levels(tmp_path: Path):
    from PIL import Image

    from digitops.data.sources import read_image

    levels = np.zeros((28, 28), dtype=np.uint16)
    levels[4:24, 12:16] = 40_000  # mid-gray ink: clipped to 8 bits it would be white (255)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert abs(int(read_image(tmp_path / "deep.png").max()) - 40_000 * 255 // 65_535) <= 1


def test_label_outside_configured_classes_is_an_error(tmp_path: Path, digits):
    images, labels = digits
    write_image_folder(tmp_path / "imgs", images[:30], labels[:30])
    with pytest.raises(DataError, match="outside the configured classes"):
        prepare.run(
            cfg(f"prepare.source={tmp_path / 'imgs'}", "prepare.classes=['0','1']"), tmp_path / "ds"
        )


def test_split_is_deterministic_for_a_seed(tmp_path: Path):
    a = prepare.run(cfg("prepare.limit=500"), tmp_path / "a")
    b = prepare.run(cfg("prepare.limit=500"), tmp_path / "b")
    c = prepare.run(cfg("prepare.limit=500", "prepare.seed=1"), tmp_path / "c")
    assert a.version == b.version != c.version
    assert a.images == {"train": 450, "val": 50, "test": 500}


def test_prepare_refuses_to_overwrite_a_foreign_directory(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DigitopsError, match="not an earlier output"):
        prepare.run(cfg("prepare.limit=100"), out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_prepare_leaves_previous_dataset_intact(tmp_path: Path):
    out = tmp_path / "ds"
    first = prepare.run(cfg("prepare.limit=100"), out)
    with pytest.raises(DataError):
        prepare.run(cfg(f"prepare.source={tmp_path / 'missing'}"), out)
    assert load_dataset(out).version == first.version


def test_modified_split_is_detected(tmp_path: Path):
    out = tmp_path / "ds"
    prepare.run(cfg("prepare.limit=100"), out)
    with (out / "val.npz").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(DataError, match="val.npz: checksum differs"):
        load_dataset(out)
