"""The `digitops` command: one sub-command per stage, plus serving and the pipeline.

Each command parses options, loads the config, calls the stage's `run`, and prints the result's
own summary (`StageResult.lines`). User errors (`DigitopsError`) become one line on stderr and
exit code 2. Heavy libraries are imported inside the commands so `digitops --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from digitops.console import (
    ARTIFACTS,
    ConfigOpt,
    DataOpt,
    ModelOpt,
    SetOpt,
    model_or_default,
    show,
    user_errors,
)
from digitops.console import make_config as _config
from digitops.errors import DigitopsError
from digitops.model.calibration import DEFAULT_CONFIDENCE_FLOOR
from digitops.pipeline.cli import pipeline_app
from digitops.production_cli import features_app, labels_app, monitor, select, store_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="digitops: handwritten-digit recognition, from data to deployed model.",
)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(store_app, name="store")
app.add_typer(features_app, name="features")
app.add_typer(labels_app, name="labels")
app.command()(select)
app.command()(monitor)


@app.command()
@user_errors
def prepare(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="'mnist' (bundled), an IDX directory, an image folder root/<label>/*.png, "
            "or a CSV with a label column and 784 pixel columns."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most N images per split pool.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split.")] = None,
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")] = ARTIFACTS / "dataset",
) -> None:
    """Build a versioned dataset directory (train/val/test, augmentation, stats, manifest)."""
    from digitops.stages import prepare as stage

    options = {"prepare.source": source, "prepare.limit": limit, "prepare.seed": seed}
    show(stage.run(_config(config, set_, **options), out))


@app.command()
@user_errors
def tune(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = ARTIFACTS / "dataset",
    trials: Annotated[int | None, typer.Option(help="Number of trials (0 = no search).")] = None,
    time_budget: Annotated[
        float | None, typer.Option(help="Wall-clock budget of the search, seconds.")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to run on, e.g. ray://head:10001 (default: $RAY_ADDRESS)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Directory for best_params.json and the trial table.")
    ] = ARTIFACTS / "tune",
) -> None:
    """Search hyper-parameters with Ray Tune (Optuna TPE + ASHA); write best_params.json."""
    from digitops.stages import tune as stage

    options = {
        "tune.trials": trials,
        "tune.time_budget_s": time_budget,
        "tune.ray_address": ray_address,
    }
    show(stage.run(_config(config, set_, **options), data, out))


@app.command()
@user_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = ARTIFACTS / "dataset",
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    params: Annotated[
        Path | None,
        typer.Option(help="best_params.json from `digitops tune` (or its directory)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = ARTIFACTS / "model",
) -> None:
    """Train the CNN with PyTorch Lightning; export ONNX; track the run in MLflow."""
    from digitops.contracts import BestParams
    from digitops.stages import train as stage

    tuned = BestParams.read(params).params if params else None
    show(stage.run(_config(config, set_, **{"train.epochs": epochs}), data, out, tuned))


@app.command()
@user_errors
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = ARTIFACTS / "model",
    data: DataOpt = ARTIFACTS / "dataset",
    out: Annotated[Path, typer.Option(help="Report directory.")] = ARTIFACTS / "evaluation",
) -> None:
    """Score the ONNX model on the test split: metrics.json, confusion matrix, error grid."""
    from digitops.stages import evaluate as stage

    show(stage.run(_config(config, set_), model, data, out))


@app.command()
@user_errors
def explain(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = ARTIFACTS / "model",
    data: DataOpt = ARTIFACTS / "dataset",
    out: Annotated[Path, typer.Option(help="Report directory.")] = ARTIFACTS / "explanation",
) -> None:
    """Captum attributions (IG, Saliency, Occlusion) and their faithfulness (deletion curves)."""
    from digitops.stages import explain as stage

    show(stage.run(_config(config, set_), model, data, out))


@app.command()
@user_errors
def drift(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    reference: Annotated[
        Path, typer.Option(help="Dataset directory whose training data is the reference.")
    ] = ARTIFACTS / "dataset",
    current: Annotated[
        str | None,
        typer.Option(
            help="A dataset directory (its test split), a folder of images, or the service's "
            "request log (.jsonl). Default: the reference dataset's test split."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Model directory: adds predicted-class and confidence drift."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Report directory.")] = ARTIFACTS / "drift",
) -> None:
    """Evidently data drift of image descriptors between the training data and current data."""
    from digitops.stages import drift as stage

    show(stage.run(_config(config, set_), reference, current, out, model))


@app.command()
@user_errors
def register(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = ARTIFACTS / "model",
    evaluation: Annotated[
        Path, typer.Option(help="Evaluation directory (from evaluate).")
    ] = ARTIFACTS / "evaluation",
    drift: Annotated[
        Path | None, typer.Option(help="drift.json from `digitops drift` (its verdict can block).")
    ] = None,
    approval: Annotated[
        str | None, typer.Option(help="manual (default): promote by hand; auto: on a pass.")
    ] = None,
    explanation: Annotated[
        Path | None,
        typer.Option(help="Explanation directory (from explain): its figures join the card."),
    ] = None,
    card_out: Annotated[
        Path | None,
        typer.Option(help="Where the model card goes (default: model-card beside --evaluation)."),
    ] = None,
) -> None:
    """Register the model in MLflow, gate it, alias it `candidate` (and `production` if auto);
    write its model card (Markdown and HTML), also logged to MLflow."""
    from digitops.registry import PRODUCTION
    from digitops.stages import register as stage

    result = stage.run(
        _config(config, set_, **{"registry.approval": approval}),
        model,
        evaluation,
        drift,
        explanation_dir=explanation,
        card_dir=card_out,
    )
    show(result)
    if result.gate_passed and PRODUCTION not in result.aliases:
        typer.echo(f"  next: digitops promote --version {result.version}")


@app.command()
@user_errors
def promote(
    version: Annotated[int, typer.Option(help="Model version to put in production.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Give the `production` alias to a version that passed the gate (after you looked at it)."""
    from digitops import registry

    cfg = _config(config, set_)
    promoted = registry.promote(cfg.registry, cfg.tracking, version)
    typer.echo(f"{cfg.registry.model_name} version {promoted.number} is in production")


@app.command()
@user_errors
def rollback(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Give `production` back to the version that held it before the current one."""
    from digitops import registry

    cfg = _config(config, set_)
    was, now = registry.rollback(cfg.registry, cfg.tracking)
    typer.echo(f"{cfg.registry.model_name}: production rolled back from version {was} to {now}")


@app.command()
@user_errors
def history(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Every move of `production` (and every rejected challenger), oldest first, with reasons."""
    from digitops import registry

    cfg = _config(config, set_)
    entries = registry.history(registry.client(cfg.tracking), cfg.registry.model_name)
    for entry in entries:
        reason = f"  {entry['reason']}" if entry.get("reason") else ""
        typer.echo(
            f"{entry['since']}  version {entry['version']:<4} {entry['action']:<16} "
            f"by {entry['by']}{reason}"
        )


@app.command()
@user_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            help="Model directory, models:/digit-classifier@production, or runs:/... "
            "(default: the registry's production version, else its candidate, else "
            "artifacts/model)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    store: Annotated[
        str,
        typer.Option(
            help="Request store every prediction is kept in: a directory or s3://bucket/prefix "
            "('' keeps nothing; /feedback then answers 404)."
        ),
    ] = str(ARTIFACTS / "store"),
    store_cap: Annotated[
        float | None,
        typer.Option(
            help="GiB at which a local store stops taking new requests (nothing is deleted; "
            "default 20)."
        ),
    ] = None,
    challenger: Annotated[
        str | None,
        typer.Option(
            help="A challenger named by an alias, e.g. models:/digit-classifier@candidate: it "
            "gets shadow or canary traffic while the alias names a version other than the "
            "champion's."
        ),
    ] = None,
    rollout: Annotated[
        str, typer.Option(help="How the challenger gets traffic: shadow or canary.")
    ] = "shadow",
    canary_share: Annotated[
        float, typer.Option(help="Share of clients the canary answers (sticky per client).")
    ] = 0.1,
    confidence_floor: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Calibrated confidence below which an answer is 'unsure' "
            f"(default {DEFAULT_CONFIDENCE_FLOOR}).",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32 (model.onnx) or int8 (model.int8.onnx, beside it) "
            "(default: $DIGITOPS_PRECISION, else fp32)."
        ),
    ] = None,
) -> None:
    """Serve the model over HTTP (FastAPI + onnxruntime): /predict, /feedback, the web page..."""
    import os

    from digitops.model.artifact import check_precision
    from digitops.serving.main import STORE_CAP_ENV
    from digitops.serving.main import serve as run_server
    from digitops.serving.predictor import CONFIDENCE_FLOOR_ENV, PRECISION_ENV
    from digitops.serving.rollout import RolloutSettings

    if store_cap is not None:  # the workers read it from the environment
        os.environ[STORE_CAP_ENV] = str(store_cap)
    if confidence_floor is not None:  # so does every predictor as it loads
        os.environ[CONFIDENCE_FLOOR_ENV] = str(confidence_floor)
    if precision is not None:  # and the precision
        os.environ[PRECISION_ENV] = check_precision(precision)
    settings = RolloutSettings(challenger, rollout, canary_share) if challenger else None  # type: ignore[arg-type]
    run_server(
        model_or_default(model),
        host,
        port,
        workers,
        store or None,
        announce=typer.echo,
        rollout=settings,
    )


@app.command()
@user_errors
def predict(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files.")] = None,
    url: Annotated[
        str | None, typer.Option(help="A running service, e.g. http://127.0.0.1:8000.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model to run locally (without --url); default as for `serve`."),
    ] = None,
    camera: Annotated[
        int | None, typer.Option(help="Read frames from webcam N (OpenCV) instead of files.")
    ] = None,
    frames: Annotated[int, typer.Option(help="Frames to read with --camera.")] = 10,
) -> None:
    """Predict digits in image files (or webcam frames), locally or with a running service."""
    from digitops.serving.client import camera_frames, describe, predict_files, read_files

    if camera is not None:
        inputs = camera_frames(camera, frames)
    elif images:
        inputs = read_files(images)
    else:
        raise DigitopsError("give image files, or --camera N")
    source = "" if url else model_or_default(model)
    for name, answer in predict_files(inputs, url=url, model=source):
        typer.echo(f"{name}: {describe(answer)}")


@app.command("batch-predict")
@user_errors
def batch_predict(
    source: Annotated[
        str, typer.Argument(help="A folder of images (searched recursively) or s3://bucket/prefix.")
    ],
    out: Annotated[
        Path, typer.Option(help="The answers: a .csv or .parquet file, one row per image.")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="Model directory, models:/name@alias or models:/name/N (default as for `serve`)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 256,
) -> None:
    """Score a folder or S3 prefix of images offline (batch inference) into a CSV/Parquet file."""
    from digitops.serving.batch import score

    done = score(model_or_default(model), source, out, batch_size)
    typer.echo(
        f"scored {done.images} images ({done.failed} unreadable) with {done.model_name} "
        f"version {done.model_version} -> {done.out}"
    )


@app.command()
@user_errors
def deploy(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[
        str, typer.Option(help="Model directory or URI, e.g. models:/digit-classifier@production.")
    ] = "models:/digit-classifier@production",
    data: DataOpt = ARTIFACTS / "dataset",
    target: Annotated[str | None, typer.Option(help="local (default) or kubernetes.")] = None,
    out: Annotated[Path, typer.Option(help="Where the deployment is recorded.")] = (
        ARTIFACTS / "deployment"
    ),
    stop: Annotated[bool, typer.Option("--stop", help="Stop the local deployment.")] = False,
) -> None:
    """Serve a model version (local service or Kubernetes) and smoke-test it over HTTP."""
    from digitops.stages import deploy as stage

    if stop:
        endpoint = stage.stop(out)
        typer.echo(f"stopped {endpoint}" if endpoint else f"no deployment recorded in {out}")
        return
    show(stage.run(_config(config, set_, **{"deploy.target": target}), model, data, out))
    typer.echo("  stop: digitops deploy --stop")


if __name__ == "__main__":
    app()
