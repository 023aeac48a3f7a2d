"""Stage `train`: fit the CNN with Lightning on a dataset directory, write the model directory.

Model directory: `model.onnx`, `model.int8.onnx` (its int8 quantization, calibrated on the
validation split), `model.ckpt` (best validation accuracy), `model.json` (the card: architecture,
parameters, normalisation, classes, hyper-parameters, dataset version, metrics, the temperature
fitted on the validation split that calibrates its confidences, and the int8 model's size and
agreement with the fp32 one).
Every run is tracked in MLflow: parameters, per-epoch metrics, dataset version, the model files.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitops import __version__
from digitops.config import Config, apply_params
from digitops.data.augment import build_augmentation
from digitops.data.dataset import RECORDS, Dataset, Split, load_dataset
from digitops.fileio import atomic_dir
from digitops.model.artifact import (
    CHECKPOINT,
    EMBEDDING_NAME,
    INPUT_NAME,
    INPUT_SPEC,
    MODEL_CARD,
    MODEL_INT8,
    MODEL_ONNX,
    OUTPUT_NAME,
    CardCalibration,
    CardDataset,
    CardInt8,
    CardMetrics,
    ModelCard,
    OnnxClassifier,
    onnx_session,
)
from digitops.model.calibration import fit_temperature, nll, reliability, scaled_softmax
from digitops.results import StageResult, log_to_mlflow, metric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult(StageResult):
    """The numbers `train` reports."""

    title = "trained model"
    model_dir: Path
    val_accuracy: float = metric()
    parameters: int = metric()
    epochs: int = metric()
    train_seconds: float = metric()
    mlflow_run_id: str | None = None


def run(
    config: Config, data_dir: Path, out_dir: Path, params: dict[str, Any] | None = None
) -> TrainResult:
    """Train on `data_dir`, write the model directory `out_dir`, track the run in MLflow.

    `params` (e.g. the `tune` stage's best parameters) override the config's values; when they
    change the augmentation, it replaces the one the dataset directory was prepared with.
    """
    dataset = load_dataset(data_dir)
    config = apply_params(config, params or {})
    augment_spec = (
        build_augmentation(config.augment)
        if any(key.startswith("augment.") for key in params or {})
        else dataset.augment_spec
    )
    if not config.tracking.enabled:
        return _train(config, dataset, augment_spec, out_dir, run_id=None)

    import mlflow

    from digitops.tracking import start_run

    with start_run(config.tracking, run_name="train") as active:
        run_id = active.info.run_id
        mlflow.set_tags(
            {"stage": "train", "dataset_version": dataset.version, "digitops_version": __version__}
        )
        mlflow.log_params(_flat_params(config))
        mlflow.log_input(_mlflow_dataset(dataset), context="training")
        if params:
            mlflow.set_tag("tuned_params", ", ".join(f"{k}={v}" for k, v in params.items()))
        if (production := _production(dataset)) is not None:
            mlflow.set_tags({f"dataset_production_{k}": v for k, v in production.items()})
            mlflow.log_artifact(str(dataset.root / RECORDS), artifact_path="dataset")
        result = _train(config, dataset, augment_spec, out_dir, run_id=run_id)
        mlflow.log_artifacts(str(out_dir), artifact_path="model")
    return result


def _train(
    config: Config,
    dataset: Dataset,
    augment_spec: dict[str, Any],
    out_dir: Path,
    run_id: str | None,
) -> TrainResult:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from digitops.data.datamodule import DigitDataModule
    from digitops.model.callbacks import EpochProgress
    from digitops.model.cnn import count_parameters
    from digitops.model.export import export_onnx
    from digitops.model.module import DigitClassifier

    cfg, started = config.train, time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = DigitDataModule.from_dataset(dataset, cfg.batch_size, cfg.seed, augment_spec)
    module = DigitClassifier.from_config(config.model, cfg, len(dataset.class_names), dataset.stats)
    with atomic_dir(out_dir, marker=MODEL_CARD) as tmp:
        checkpoint = ModelCheckpoint(
            dirpath=tmp / "checkpoints",
            filename="best",
            monitor="val_accuracy",
            mode="max",
            save_top_k=1,
        )
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            accelerator="cpu",
            devices=1,
            logger=_logger(config, run_id),
            callbacks=[
                checkpoint,
                EarlyStopping("val_accuracy", mode="max", patience=cfg.patience),
                EpochProgress(),
            ],
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=tmp,
            log_every_n_steps=50,
        )
        trainer.fit(module, datamodule=data)
        best = DigitClassifier.load_from_checkpoint(checkpoint.best_model_path)
        shutil.move(checkpoint.best_model_path, tmp / CHECKPOINT)
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        parity = export_onnx(best.net, tmp / MODEL_ONNX, dataset.split("val").images)
        val_accuracy = float(checkpoint.best_model_score or 0.0)
        result = TrainResult(
            out_dir,
            val_accuracy,
            count_parameters(best.net),
            trainer.current_epoch,
            time.perf_counter() - started,
            run_id,
        )
        card = _model_card(config, dataset, result, parity, augment_spec)
        classifier = OnnxClassifier(onnx_session(tmp / MODEL_ONNX), card)
        calibration = _calibration(classifier, dataset.split("val"))
        int8 = _int8(tmp, classifier, dataset.split("val"))
        card.model_copy(update={"calibration": calibration, "int8": int8}).write(tmp)
    if run_id is not None:
        # After the per-epoch curves, at the last step: the kept (best) checkpoint's numbers, so
        # the run's `val_accuracy` is the model's, as in KFP and on the console.
        log_to_mlflow(result, step=trainer.global_step + 1)
    return result


def _calibration(classifier: OnnxClassifier, val: Split) -> CardCalibration:
    """Temperature scaling fitted on the validation split, with the exported model as served."""
    logits = classifier.logits(val.images)
    temperature = fit_temperature(logits, val.labels)
    before = reliability(scaled_softmax(logits), val.labels).ece
    after = reliability(scaled_softmax(logits, temperature), val.labels).ece
    log.info("temperature %.3f: validation ECE %.4f -> %.4f", temperature, before, after)
    return CardCalibration(
        temperature=round(temperature, 6),
        fitted_on="val",
        images=len(val.labels),
        nll_before=round(nll(logits, val.labels), 6),
        nll_after=round(nll(logits, val.labels, temperature), 6),
        ece_before=round(before, 6),
        ece_after=round(after, 6),
    )


def _int8(model_dir: Path, fp32: OnnxClassifier, val: Split) -> CardInt8:
    """The int8 model beside the fp32 one, calibrated on the validation split, and how often the
    two answer the same digit there."""
    from digitops.model.quantize import quantize_onnx

    written = quantize_onnx(model_dir / MODEL_ONNX, model_dir / MODEL_INT8, val.images)
    int8 = OnnxClassifier(onnx_session(written.path), fp32.card, "int8")
    same = int8.logits(val.images).argmax(axis=1) == fp32.logits(val.images).argmax(axis=1)
    agreement = float(same.mean())
    log.info(
        "int8 model: %.1f KB, same answer as fp32 on %.2f%% of the validation split",
        written.size_bytes / 1000,
        100 * agreement,
    )
    return CardInt8(
        size_bytes=written.size_bytes,
        calibrated_on="val",
        images=written.calibration_images,
        agreement=round(agreement, 6),
    )


def _logger(config: Config, run_id: str | None) -> Any:
    if run_id is None:
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    from digitops.tracking import tracking_uri

    return MLFlowLogger(tracking_uri=tracking_uri(config.tracking), run_id=run_id)


def _production(dataset: Dataset) -> dict[str, Any] | None:
    """Which production data the dataset holds (None: none)."""
    source = dataset.manifest.get("source", {})
    if "store" not in source:
        return None
    return {
        "store": source["store"],
        "images": source["production_images"],
        "records_sha256": dataset.manifest["files"][RECORDS]["sha256"],
    }


def _model_card(
    config: Config,
    dataset: Dataset,
    result: TrainResult,
    parity: float,
    augment_spec: dict[str, Any],
) -> ModelCard:
    return ModelCard(
        architecture="DigitCNN",
        parameters=result.parameters,
        input={"name": INPUT_NAME, "spec": INPUT_SPEC},
        output={
            "name": OUTPUT_NAME,
            "classes": len(dataset.class_names),
            "embedding": {"name": EMBEDDING_NAME, "size": 4 * config.model.width},
        },
        class_names=dataset.class_names,
        normalization={
            "mean": dataset.stats["mean"],
            "std": dataset.stats["std"],
            "applied_inside_model": True,
        },
        hyperparameters={
            "model": config.model.model_dump(),
            "train": config.train.model_dump(),
            "augment": config.augment.model_dump(),
        },
        augmentation=augment_spec,
        dataset=CardDataset(
            version=dataset.version,
            path=str(dataset.root.resolve()),
            sizes=dataset.manifest["sizes"],
            production=_production(dataset),
        ),
        metrics=CardMetrics(
            val_accuracy=result.val_accuracy,
            epochs=result.epochs,
            train_seconds=round(result.train_seconds, 1),
        ),
        onnx={"max_abs_diff_vs_torch": parity},
        mlflow_run_id=result.mlflow_run_id,
        digitops_version=__version__,
    )


def _flat_params(config: Config) -> dict[str, Any]:
    sections = {"model": config.model, "train": config.train, "augment": config.augment}
    return {
        f"{name}.{key}": value
        for name, section in sections.items()
        for key, value in section.model_dump().items()
    }


def _mlflow_dataset(dataset: Dataset) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        # MLflow registers the local-file source under two schemes and warns that both match.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(dataset.root.resolve().as_uri())
    return MetaDataset(source=source, name="digits", digest=dataset.version[:36])  # type: ignore[abstract]
