"""Feast over the request store: `feast apply`, materialization, and the point-in-time join that
monitoring and labeling read, checked against a hand-computed expectation."""

import time
from pathlib import Path

import numpy as np
import pytest

from digitops import features
from digitops.store.layout import image_hash
from digitops.store.writer import Correction, StoreWriter

from ..unit.store.test_store import CLASSES, digits, prediction

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def predict(writer: StoreWriter, image: np.ndarray, digit: str, version: str) -> str:
    (rid,) = writer.record(image[None], [b"png"], [prediction(digit)], None, "digits", version)
    time.sleep(0.01)  # each event in its own millisecond, as the timestamps are kept
    return rid


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory):
    """Image A predicted by version 1, then by version 2; both answers labeled after version 2
    came; image B predicted by version 1 only, labeled twice (the second replaces the first)."""
    work = tmp_path_factory.mktemp("features")
    writer = StoreWriter(str(work / "store"), "service")
    a, b = digits(2)
    a_v1 = predict(writer, a, "1", "1")
    b_v1 = predict(writer, b, "4", "1")
    a_v2 = predict(writer, a, "7", "2")  # version 2 answers image A differently
    for correction in [
        Correction(a_v1, "7", "web"),  # given after version 2 predicted A
        Correction(a_v2, "7", "api"),
        Correction(b_v1, "9", "api"),
        Correction(b_v1, "4", "reviewer", replace=True),
    ]:
        writer.label([correction], CLASSES)
        time.sleep(0.01)
    repo = features.copy_repo(REPO, work / "feature_repo")
    exported = features.apply(writer.uri, repo)
    assert (exported.predictions, exported.labels) == (3, 4)
    ids = {"a_v1": a_v1, "a_v2": a_v2, "b_v1": b_v1}
    return repo, ids, {"a": image_hash(a), "b": image_hash(b)}


def test_feast_apply_registers_the_views(repo):
    from feast import FeatureStore

    path, _, _ = repo
    store = FeatureStore(repo_path=str(path))
    assert sorted(v.name for v in store.list_feature_views()) == ["labels", "predictions"]
    assert [e.name for e in store.list_entities()] == ["image"]


def test_labels_join_to_the_prediction_of_the_request_they_label(repo):
    path, ids, images = repo
    frame = features.labeled_frame(path)
    got = {
        row.labeled_request: (row.label, row.predictions__model_version, row.predictions__predicted)
        for row in frame.itertuples()
    }
    # By hand: the label of A's first answer came after version 2 predicted A, yet it joins to
    # version 1's answer ("1", wrong); A's second answer is version 2's ("7", right); B's label
    # in force is the reviewer's replacement.
    assert got == {
        ids["a_v1"]: ("7", "1", "1"),
        ids["a_v2"]: ("7", "2", "7"),
        ids["b_v1"]: ("4", "1", "4"),
    }
    assert set(frame["image"]) == set(images.values())
    assert (frame["predictions__request_id"] == frame["labeled_request"]).all()


def test_materialize_serves_the_latest_values_online(repo):
    from feast import FeatureStore

    path, _, images = repo
    features.materialize(path)
    online = (
        FeatureStore(repo_path=str(path))
        .get_online_features(
            features=["predictions:model_version", "predictions:predicted", "labels:label"],
            entity_rows=[{"image": images["a"]}, {"image": images["b"]}],
        )
        .to_dict()
    )
    assert online["model_version"] == ["2", "1"]
    assert online["predicted"] == ["7", "4"]
    assert online["label"] == ["7", "4"]
