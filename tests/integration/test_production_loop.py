"""The data half of the production loop, end to end with real parts: a 2-worker service and the
Lambda handler sharing one request store on S3 (a moto server), corrections through /feedback
and through the web page in Chromium, then `prepare` on the store and `train` on the result."""

import base64
import hashlib
import json

import boto3
import httpx
import numpy as np
import pytest

from digitops.data.dataset import load_dataset
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.serving import aws_lambda
from digitops.serving.aws_lambda import LambdaHandler
from digitops.serving.predictor import load_predictor
from digitops.serving.preprocess import preprocess
from digitops.store.layout import image_hash
from digitops.store.reader import open_store, read_blob, read_lines
from digitops.store.writer import StoreWriter

from ..integration.test_cli import run_cli
from ..serving_helpers import (
    aws_env,
    chromium_page,
    function_url_event,
    png,
    running_moto,
    running_service,
    s3_event,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "digits"
STORE = f"s3://{BUCKET}/store/"


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, trained):
    """(service URL, Lambda handler, S3 client, work dir): both faces keep their predictions in
    the same store on a moto S3 server."""
    work = tmp_path_factory.mktemp("loop")
    with running_moto(work) as url, pytest.MonkeyPatch.context() as env:
        for name, value in aws_env(url).items():
            env.setenv(name, value)
        aws_lambda._s3.cache_clear()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        handler = LambdaHandler(
            load_predictor(str(trained.model_dir)), store=StoreWriter(STORE, "lambda")
        )
        serve = ("--workers", "2", "--store", STORE)
        with running_service(trained.model_dir, work, *serve) as service:
            yield service, handler, s3, work
    aws_lambda._s3.cache_clear()


def predict_in_the_page(url: str, uploads: list[tuple[bytes, str]]) -> None:
    """Upload each image in the web page and tap its true digit in the "correct it" row."""
    with chromium_page(url) as page:
        for data, digit in uploads:
            with page.expect_response("**/predict"):
                page.set_input_files(
                    "#file", files=[{"name": "d.png", "mimeType": "image/png", "buffer": data}]
                )
            page.locator("#correct").wait_for(state="visible", timeout=15_000)
            assert page.locator("#version").inner_text().startswith("model version ")
            with page.expect_response("**/feedback") as labeled:
                page.locator(f'#choices button[data-digit="{digit}"]').click()
            assert labeled.value.status == 201, labeled.value.text()
            page.locator("#thanks").filter(has_text=f"kept as {digit}").wait_for(timeout=5_000)


def test_200_predictions_and_60_corrections_become_a_dataset_and_a_model(loop, trained):
    url, handler, s3, work = loop
    mnist = load_idx_dir(BUNDLED_MNIST)
    sent = [png(image) for image in mnist.test_images[:200]]
    truth = [str(label) for label in mnist.test_labels[:200]]
    ids: list[str] = []

    with httpx.Client(base_url=url, timeout=30) as client:
        for data in sent[:150]:  # the service
            answer = client.post("/predict", files={"file": ("d.png", data)})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])
    for i, data in enumerate(sent[150:170]):  # Lambda: S3 uploads
        key = f"uploads/{i}.png"
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        (result,) = handler(s3_event(BUCKET, key, len(data)))["results"]
        ids.append(result["request_id"])
    for data in sent[170:190]:  # Lambda: the Function URL
        body = json.dumps({"image": base64.b64encode(data).decode()}).encode()
        response = handler(function_url_event("POST", "/predict", body, "application/json"))
        assert response["statusCode"] == 200, response["body"]
        ids.append(json.loads(response["body"])["request_id"])
    assert len(set(ids)) == 190 and all(ids)

    # 50 corrections through /feedback: 25 one at a time, 25 in a batch, from both faces.
    chosen = [*range(0, 150, 5), *range(150, 190, 2)]  # 30 from the service, 20 from Lambda
    assert len(chosen) == 50
    labels = [{"request_id": ids[i], "digit": truth[i], "source": "ci"} for i in chosen]
    with httpx.Client(base_url=url, timeout=30) as client:
        for label in labels[:25]:
            kept = client.post("/feedback", json=label)
            assert kept.status_code == 201, kept.text
        batch = client.post("/feedback/batch", json={"labels": labels[25:]})
        assert batch.status_code == 201, batch.text
    # 10 more in the web page: predicted there, corrected there.
    predict_in_the_page(url, list(zip(sent[190:], truth[190:], strict=True)))

    records = {r["request_id"]: r for r in read_lines(open_store(STORE), "records/")}
    assert len(records) == 200
    given = read_lines(open_store(STORE), "labels/")
    assert len(given) == 60 and sum(g["source"] == "web" for g in given) == 10

    dataset = work / "dataset"
    prepared = run_cli("prepare", "--source", STORE, "--out", str(dataset), cwd=work)
    assert prepared.returncode == 0, prepared.stderr
    data = load_dataset(dataset)
    images = np.concatenate([data.split(s).images for s in ("train", "val", "test")])
    classes = np.concatenate([data.split(s).labels for s in ("train", "val", "test")])
    assert len(images) == 60
    # Exactly the labeled requests' images, byte for byte what the model was given: each is
    # the upload (kept in the store as sent) preprocessed again.
    by_sha = {hashlib.sha256(d).hexdigest(): (d, t) for d, t in zip(sent, truth, strict=True)}
    expected = {}
    for entry in given:
        record = records[entry["request_id"]]
        upload, true_digit = by_sha[record["original"]]
        assert read_blob(open_store(STORE), record["original_at"]) == upload  # kept as sent
        pixels = (preprocess(upload) * 255).round().astype(np.uint8)
        assert image_hash(pixels) == record["image"]
        expected[record["image"]] = (pixels.tobytes(), true_digit)
    got = {
        image_hash(image): (image.tobytes(), data.class_names[c])
        for image, c in zip(images, classes, strict=True)
    }
    assert got == expected
    lineage = json.loads((dataset / "records.json").read_text())
    assert sorted(r["request_id"] for r in lineage) == sorted(g["request_id"] for g in given)

    model = work / "model"
    trained_again = run_cli(
        *("train", "--data", str(dataset), "--out", str(model)),
        *("--set", "train.epochs=2", "--set", f"tracking.uri=sqlite:///{work / 'mlflow.db'}"),
        cwd=work,
    )
    assert trained_again.returncode == 0, trained_again.stderr[-3000:]
    card = json.loads((model / "model.json").read_text())
    assert card["dataset"]["version"] == data.version
    assert card["dataset"]["sizes"] == data.manifest["sizes"]
    # The lineage names the production data: on the card (register copies it to the version)
    # and in the training run, with the records file that lists each request.
    assert card["dataset"]["production"]["images"] == 60
    assert card["dataset"]["production"]["store"] == STORE
    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{work / 'mlflow.db'}").get_run(card["mlflow_run_id"])
    assert run.data.tags["dataset_production_images"] == "60"
    artifacts = MlflowClient(f"sqlite:///{work / 'mlflow.db'}").list_artifacts(
        run.info.run_id, "dataset"
    )
    assert [a.path for a in artifacts] == ["dataset/records.json"]
