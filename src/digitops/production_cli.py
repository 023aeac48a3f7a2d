"""`digitops store` and `digitops features`: the production data the service keeps, read back.

digitops store accuracy                live accuracy per model version, with its interval
digitops features apply                the store as Feast feature views (`feast apply`)
digitops features materialize          latest values into the online store
digitops features frame --out f.parquet   labels joined point-in-time to their predictions
digitops select --budget 100            queue the unlabeled images most worth labeling
digitops labels push                    the queued batch into Label Studio, pre-annotated
digitops labels pull                    finished annotations back into the store as labels
digitops labels connect --service URL   the service as the project's ML backend
digitops monitor [--watch 900]          drift, live accuracy, new labels: alert, retrain,
                                        promote or reject the challenger
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from digitops.console import (
    ARTIFACTS,
    ConfigOpt,
    SetOpt,
    make_config,
    model_or_default,
    user_errors,
)

StoreOpt = Annotated[
    str, typer.Option("--store", help="The request store: a directory or s3://bucket/prefix.")
]
RepoOpt = Annotated[Path, typer.Option("--repo", help="The Feast feature repository.")]
DEFAULT_STORE = str(ARTIFACTS / "store")

store_app = typer.Typer(no_args_is_help=True, help="Read the request store the service keeps.")
features_app = typer.Typer(no_args_is_help=True, help="The request store as Feast feature views.")
labels_app = typer.Typer(
    no_args_is_help=True, help="Label Studio: batches in with pre-annotations, labels back."
)
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Label Studio (default: $LABEL_STUDIO_URL).")
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="A personal access token of Label Studio (default: $LABEL_STUDIO_API_KEY).",
    ),
]
ProjectOpt = Annotated[str, typer.Option("--project", help="The Label Studio project's title.")]


@store_app.command("accuracy")
@user_errors
def store_accuracy(store: StoreOpt = DEFAULT_STORE) -> None:
    """Accuracy of each model version on the production requests users labeled."""
    from digitops.store.reader import live_accuracy, open_store, read_lines

    tallies = live_accuracy(read_lines(open_store(store), "labels/"))
    if not tallies:
        typer.echo(f"{store}: no labeled request yet (POST /feedback, or the web page)")
        return
    typer.echo(f"{'model version':<16}{'labeled':>8}{'correct':>9}{'accuracy':>10}  95 % interval")
    for tally in tallies:
        low, high = tally.interval
        typer.echo(
            f"{tally.model_version:<16}{tally.labeled:>8}{tally.correct:>9}"
            f"{tally.accuracy:>10.2%}  {low:.1%} – {high:.1%}"
        )


@features_app.command("apply")
@user_errors
def features_apply(store: StoreOpt = DEFAULT_STORE, repo: RepoOpt = Path("feature_repo")) -> None:
    """Export the store's records and labels to the repository's Parquet files, `feast apply`."""
    from digitops import features

    done = features.apply(store, repo)
    typer.echo(
        f"feast apply: {done.predictions} predictions, {done.labels} labels in {repo / 'data'}"
    )


@features_app.command("materialize")
@user_errors
def features_materialize(repo: RepoOpt = Path("feature_repo")) -> None:
    """Load the latest prediction and label of each image into the online store."""
    from digitops import features

    until = features.materialize(repo)
    typer.echo(f"materialized up to {until:%Y-%m-%d %H:%M:%S} UTC")


@features_app.command("frame")
@user_errors
def features_frame(
    out: Annotated[Path, typer.Option(help="Parquet file to write.")],
    repo: RepoOpt = Path("feature_repo"),
) -> None:
    """Each label in force with the prediction it corrects, as of that request (through Feast)."""
    from digitops import features

    frame = features.labeled_frame(repo)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    typer.echo(f"{out}: {len(frame)} labeled predictions")


@user_errors
def select(
    store: StoreOpt = DEFAULT_STORE,
    budget: Annotated[int, typer.Option(help="Images to pick.")] = 100,
    strategy: Annotated[
        str, typer.Option(help="uncertainty-diversity, uncertainty or random.")
    ] = "uncertainty-diversity",
    measure: Annotated[str, typer.Option(help="Uncertainty: margin or entropy.")] = "margin",
    seed: Annotated[int, typer.Option(help="Seed of the clustering (or of random picks).")] = 0,
    model: Annotated[
        str | None,
        typer.Option(help="The model that scores the pool (default: as for `serve`)."),
    ] = None,
    requeue: Annotated[
        bool,
        typer.Option(
            "--requeue", help="Pick among images queued before too (batches never labeled)."
        ),
    ] = False,
) -> None:
    """Queue the stored, unlabeled images most worth a person's label."""
    from digitops.errors import DigitopsError
    from digitops.labeling import batches
    from digitops.labeling.select import MEASURES, STRATEGIES
    from digitops.serving.predictor import load_predictor

    if strategy not in STRATEGIES or measure not in MEASURES:
        raise DigitopsError(
            f"--strategy is one of {', '.join(STRATEGIES)}, --measure one of {', '.join(MEASURES)}"
        )
    predictor = load_predictor(model_or_default(model))
    scorer = batches.Model(predictor.classifier, predictor.name, predictor.version)
    batch = batches.select(store, scorer, budget, strategy, measure, seed, requeue=requeue)
    items = batch.items
    median = sorted(item[measure] for item in items)[len(items) // 2]
    typer.echo(
        f"batch {batch.batch_id}: {len(items)} of {batch.pool} unlabeled images "
        f"({strategy}; median {measure} {median:.3f}) in {store}/queue/{batch.batch_id}.json"
    )
    for item in items[:10]:
        typer.echo(
            f"  {item['request_id']}  predicted {item['predicted']} at {item['confidence']:.2f}"
            f"  margin {item['margin']:.3f}  entropy {item['entropy']:.3f}"
        )
    if len(items) > 10:
        typer.echo(f"  ... {len(items) - 10} more")


def _studio(url: str | None, api_key: str | None, files_root: Path | None, project: str) -> Any:
    from digitops.labeling.studio import Studio, StudioSettings

    given: dict[str, Any] = {
        "url": url,
        "api_key": api_key,
        "local_files_document_root": files_root,
    }
    settings = StudioSettings.model_validate({k: v for k, v in given.items() if v is not None})
    return Studio(settings, project)


@labels_app.command("push")
@user_errors
def labels_push(
    store: StoreOpt = DEFAULT_STORE,
    batch: Annotated[str, typer.Option(help="Batch id from `select` ('latest').")] = "latest",
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    files_root: Annotated[
        Path | None,
        typer.Option(
            help="Label Studio's local-files root, where the images go "
            "(default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)."
        ),
    ] = None,
    project: ProjectOpt = "digitops digits",
) -> None:
    """Import a batch as Label Studio tasks, each pre-annotated with the model's answer."""
    from digitops.labeling.batches import load_batch

    studio = _studio(url, api_key, files_root, project)
    found = load_batch(store, batch)
    done = studio.push(found)
    typer.echo(
        f"batch {found.batch_id}: {done.imported} tasks imported into {studio.url}/projects/"
        f"{done.project_id} ({done.already_there} there already)"
    )


@labels_app.command("pull")
@user_errors
def labels_pull(
    store: StoreOpt = DEFAULT_STORE,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    project: ProjectOpt = "digitops digits",
) -> None:
    """Keep Label Studio's finished annotations as labels in the store (again: only news)."""
    studio = _studio(url, api_key, None, project)
    done = studio.pull(store)
    typer.echo(
        f"{done.added} labels kept from {studio.url}/projects/{done.project_id}, "
        f"{done.unchanged} pulled before"
        + (f", {done.not_ours} annotated tasks not from the store" if done.not_ours else "")
        + (f", {done.gone} labels whose annotation is gone (kept)" if done.gone else "")
    )


@labels_app.command("connect")
@user_errors
def labels_connect(
    service: Annotated[str, typer.Option(help="The digitops service, as Label Studio reaches it.")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    project: ProjectOpt = "digitops digits",
) -> None:
    """Connect the service as the project's ML backend (live pre-annotations of new tasks)."""
    studio = _studio(url, api_key, None, project)
    backend = studio.connect(service)
    typer.echo(f"ML backend {backend}: {service.rstrip('/')}/label-studio on {studio.url}")


@user_errors
def monitor(
    store: StoreOpt = DEFAULT_STORE,
    data: Annotated[
        str,
        typer.Option(
            help="Reference data the window is compared with: a dataset directory (its test "
            "split) or a folder of images."
        ),
    ] = str(ARTIFACTS / "dataset"),
    out: Annotated[Path, typer.Option(help="Where monitor.json and history.jsonl go.")] = (
        ARTIFACTS / "monitor"
    ),
    kfp_host: Annotated[
        str | None,
        typer.Option(help="Retrain on this KFP API (default: the local runner, waited for)."),
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(help="URL told of alerts, retrains and rollout moves.")
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option(min=1, help="Repeat every this many seconds (Ctrl-C stops)."),
    ] = None,
    pipeline_file: Annotated[Path, typer.Option("--pipeline", help="Compiled pipeline.")] = (
        Path("pipelines") / "digits.yaml"
    ),
    root: Annotated[Path, typer.Option(help="Local pipeline root of retrain runs.")] = (
        ARTIFACTS / "pipeline-root"
    ),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """One pass of the production monitor: decide nothing, alert or retrain (with reasons),
    and promote or reject the challenger on live labeled traffic."""
    import time

    from digitops.monitor.run import run_pass

    cfg = make_config(config, set_, **{"monitor.kfp_host": kfp_host, "monitor.webhook": webhook})
    while True:
        done = run_pass(cfg, store, data, out, pipeline_file, root.resolve())
        typer.echo("\n".join(done.lines()))
        for failure in done.failures:
            typer.echo(f"error: {failure}", err=True)
        if watch is None:
            break
        time.sleep(watch)  # a failed pass is recorded; the next one comes anyway
    if done.failures:
        raise typer.Exit(2)
