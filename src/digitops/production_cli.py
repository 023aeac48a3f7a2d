"""`digitops store` and `digitops features`: the production data the service keeps, read back.

digitops store accuracy                live accuracy per model version, with its interval
digitops features apply                the store as Feast feature views (`feast apply`)
digitops features materialize          latest values into the online store
digitops features frame --out f.parquet   labels joined point-in-time to their predictions
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from digitops.console import ARTIFACTS, user_errors

StoreOpt = Annotated[
    str, typer.Option("--store", help="The request store: a directory or s3://bucket/prefix.")
]
RepoOpt = Annotated[Path, typer.Option("--repo", help="The Feast feature repository.")]
DEFAULT_STORE = str(ARTIFACTS / "store")

store_app = typer.Typer(no_args_is_help=True, help="Read the request store the service keeps.")
features_app = typer.Typer(no_args_is_help=True, help="The request store as Feast feature views.")


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
