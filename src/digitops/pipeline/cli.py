"""`digitops pipeline`: compile the pipeline, run it here (KFP local runner), submit it to KFP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from digitops.config import parse_override
from digitops.console import ARTIFACTS, user_errors

pipeline_app = typer.Typer(
    no_args_is_help=True, help="Compile, run locally, or submit the KFP pipeline."
)

ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Pipeline parameter, e.g. --param epochs=3 (repeatable)."),
]
PipelineFileOpt = Annotated[Path, typer.Option("--pipeline", help="Compiled pipeline YAML.")]


def _pipeline_arguments(params: list[str] | None, **named: Any) -> dict[str, Any]:
    arguments = {key: value for key, value in named.items() if value is not None}
    for item in params or []:
        key, value = parse_override(item, flag="--param")
        arguments[key] = "" if value is None else value  # an empty value is the empty string
    return arguments


@pipeline_app.command("compile")
@user_errors
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Root under which pipelines/ and components/ go.")] = (
        Path(".")
    ),
) -> None:
    """Write pipelines/digits.yaml and one component spec per stage under components/."""
    from digitops.pipeline.runner import compile_all

    for path in compile_all(out / "pipelines", out / "components"):
        typer.echo(f"wrote {path}")


@pipeline_app.command("run")
@user_errors
def pipeline_run(
    params: ParamOpt = None,
    source: Annotated[str | None, typer.Option(help="Data source (see prepare).")] = None,
    limit: Annotated[int | None, typer.Option(help="Image limit (0 = all).")] = None,
    tune_trials: Annotated[
        int | None, typer.Option(help="Search trials (0 = the configured hyper-parameters).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    pipeline_file: PipelineFileOpt = Path("pipelines") / "digits.yaml",
    root: Annotated[Path, typer.Option(help="Local pipeline root.")] = ARTIFACTS / "pipeline-root",
    docker: Annotated[
        bool,
        typer.Option(
            help="Run each task in the component image (kfp DockerRunner; `make images` first)."
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster the search runs on (the ray_address parameter; default: "
            "$RAY_ADDRESS, else inside the task); from containers, Ray Client's ray://host:10001."
        ),
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            help="Skip the tasks that already succeeded with the same inputs under --root "
            "(to finish a run that failed half-way). Drift, register and deploy always run."
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print everything the tasks and KFP print.")
    ] = False,
) -> None:
    """Run the compiled pipeline here with the KFP local runner; summarise every task."""
    from digitops.pipeline.runner import run_local

    arguments = _pipeline_arguments(
        params,
        source=source,
        limit=limit,
        tune_trials=tune_trials,
        epochs=epochs,
        ray_address=ray_address,
    )
    run_dir, tasks = run_local(
        pipeline_file,
        arguments,
        root.resolve(),
        docker=docker,
        verbose=verbose,
        cache=cache,
    )
    typer.echo(f"pipeline run finished: {run_dir}")
    for task in tasks:
        typer.echo("\n".join(task.lines()))


@pipeline_app.command("submit")
@user_errors
def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://localhost:8080.")],
    params: ParamOpt = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment name.")] = "digitops",
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait with --wait.")] = 3600,
    pipeline_file: PipelineFileOpt = Path("pipelines") / "digits.yaml",
) -> None:
    """Upload the pipeline (new version if it exists) and start a run on a KFP host."""
    from digitops.pipeline.runner import submit

    arguments = _pipeline_arguments(params)
    run_id, state = submit(host, pipeline_file, arguments, experiment, wait, timeout)
    typer.echo(f"run {run_id}: {state}")
    if wait and state.upper() not in ("SUCCEEDED", "RUNTIMESTATE.SUCCEEDED"):
        raise typer.Exit(1)
