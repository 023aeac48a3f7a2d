"""A service answering with the int8 model keeps its requests' embeddings and predictions in the
store, and the monitor compares them with the fp32 model's on reference images. Precision alone
must not look like drift: calm MNIST traffic at int8 is judged as calm as at fp32."""

import numpy as np
import pandas as pd
import pytest

from digitops.config import Config
from digitops.data.dataset import load_dataset
from digitops.model.artifact import OnnxClassifier
from digitops.monitor.observe import _test, as_served

IMAGES = 300  # per side, as the monitor's smallest window (monitor.min_requests 200) and more


@pytest.fixture(scope="module")
def halves(mnist_slice):  # type: ignore[no-untyped-def]
    test = load_dataset(mnist_slice, verify=False).split("test").images
    served = as_served(test[: 2 * IMAGES])
    return served[:IMAGES], served[IMAGES:]  # reference, then the requests


@pytest.mark.parametrize("served_at", ["fp32", "int8"])
def test_calm_traffic_served_at_either_precision_does_not_drift(trained, halves, served_at):
    reference, requests = halves
    fp32 = OnnxClassifier.load(trained.model_dir)
    served = OnnxClassifier.load(trained.model_dir, precision=served_at)
    ref_logits, ref_embeddings = fp32.outputs(reference)
    logits, embeddings = served.outputs(requests)
    assert ref_embeddings is not None and embeddings is not None
    config = Config()
    dims = [f"embedding_{i}" for i in range(embeddings.shape[1])]
    found = _test(
        config,
        "embeddings",
        pd.DataFrame(ref_embeddings, columns=dims),
        pd.DataFrame(embeddings, columns=dims),
        dims,
        config.monitor.embedding_drift_share,
    )
    assert not found.drifted, found.columns

    def answers(classifier: OnnxClassifier, raw: np.ndarray) -> pd.DataFrame:
        probabilities = classifier.calibrated(raw)
        names = np.array(classifier.class_names)
        return pd.DataFrame(
            {"predicted": names[probabilities.argmax(1)], "confidence": probabilities.max(1)}
        )

    predictions = _test(
        config,
        "predictions",
        answers(fp32, ref_logits),
        answers(served, logits),
        ["predicted", "confidence"],
        config.drift.drift_share,
    )
    assert not predictions.drifted, predictions.columns
