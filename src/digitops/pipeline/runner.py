"""Compile the pipeline, run it on this machine (KFP local runner), or submit it to a KFP host."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from digitops.errors import DigitopsError, tracking_unreachable
from digitops.progress import PREFIX as PROGRESS
from digitops.progress import duration
from digitops.results import show_value

log = logging.getLogger(__name__)

PIPELINE_FILE = "digits.yaml"


class PipelineError(DigitopsError):
    """The pipeline could not be compiled, run or submitted."""


def compile_all(pipelines_dir: Path, components_dir: Path) -> list[Path]:
    """Write the pipeline YAML and one spec per component (the stages, and the components of
    their own such as `batch_predict`); return the files written."""
    from kfp import compiler

    from digitops.pipeline import components, dag

    pipelines_dir.mkdir(parents=True, exist_ok=True)
    components_dir.mkdir(parents=True, exist_ok=True)
    written = [pipelines_dir / PIPELINE_FILE]
    compiler.Compiler().compile(dag.digits_pipeline, str(written[0]))
    for name in (*components.STAGES, *components.STANDALONE):
        path = components_dir / f"{name}.yaml"
        compiler.Compiler().compile(getattr(components, name), str(path))
        written.append(path)
    return written


@dataclass
class TaskSummary:
    """One task of a run: output parameters, artifact paths, and metadata (metrics included)."""

    name: str
    outputs: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The console summary: output parameters, then each artifact with its metadata."""
        rows = [f"  {self.name}"]
        rows += [f"    {key}: {value}" for key, value in self.outputs.items()]
        for name, uri in self.artifacts.items():
            details = ", ".join(
                f"{k}={show_value(v)}"
                for k, v in self.metadata[name].items()
                if k != "confusionMatrix"
            )
            rows.append(f"    {name}: {uri}" + (f"  ({details})" if details else ""))
        return rows


def run_local(
    pipeline_file: Path,
    arguments: dict[str, Any],
    pipeline_root: Path,
    docker: bool = False,
    verbose: bool = False,
    cache: bool = False,
) -> tuple[Path, list[TaskSummary]]:
    """Run the compiled pipeline with the KFP local runner; summarise every task.

    By default each task is a subprocess of this environment (`SubprocessRunner`). With
    `docker`, each runs in the component image named in the pipeline (`DockerRunner`), as the
    calling user, on the host's network, in `<pipeline root>/work`: relative paths such as the
    default `sqlite:///mlflow.db` store land there, and a tracking server on localhost is
    reachable. The containers get this process's MLflow and Ray settings (`task_env`), as pods
    get them from the cluster's secrets.

    With `cache`, a task whose inputs, image and
    command match one that succeeded under this pipeline root is not run again (KFP's local
    cache, in `<pipeline root>/.kfp_cache`): a run that failed half-way can be run again from
    where it stopped. The tasks with side effects (drift, register, deploy) always run.

    It prints one line per task start and end and the tasks' progress lines; `verbose` prints
    everything the tasks and the runner say instead.
    """
    from kfp import components, local

    if not pipeline_file.is_file():
        raise PipelineError(
            f"{pipeline_file}: compiled pipeline not found; run `digitops pipeline compile`"
        )
    pipeline = components.load_component_from_file(str(pipeline_file))
    unknown = set(arguments) - set(pipeline.component_spec.inputs or {})
    if unknown:
        raise PipelineError(
            f"unknown pipeline parameter(s) {sorted(unknown)}; known: "
            f"{sorted(pipeline.component_spec.inputs or {})}"
        )
    inputs = pipeline.component_spec.inputs or {}
    arguments = {  # `3` for a Float parameter is 3.0 (KFP refuses an int there)
        name: float(value)
        if inputs[name].type == "Float" and isinstance(value, int) and not isinstance(value, bool)
        else value
        for name, value in arguments.items()
    }
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.iterdir())
    runner: Any = local.SubprocessRunner(use_venv=False)
    if docker:
        image_ids = _check_images(pipeline_file)
        runner = local.DockerRunner(
            user=f"{os.getuid()}:{os.getgid()}",
            network_mode="host",
            working_dir=str(_docker_work_dir(pipeline_root)),
            environment=task_env(),
        )
    cache_root = None
    if cache:  # what the tasks run: the images with --docker, else this checkout's sources
        code = image_ids if docker else _source_fingerprint()
        cache_root = str(_cache_root(pipeline_root, code))
    local.init(
        runner=runner,
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
        enable_caching=cache,
        cache_root=cache_root,
    )
    run_log = _RunLog(sys.stdout, verbose)
    try:
        with contextlib.redirect_stdout(run_log), warnings.catch_warnings():
            if not verbose:
                # The local runner warns, for every task, that resource settings and a custom
                # base image mean nothing to it: true of every run, nothing a user can act on.
                warnings.filterwarnings("ignore", message=r"Task '.*': settings .* have no effect")
                warnings.filterwarnings("ignore", message=r"You may be attemping to run a task")
            pipeline(**arguments)
    except RuntimeError as exc:
        raise PipelineError(_failure_line(str(exc), run_log.last_error)) from None
    new = (
        set(pipeline_root.iterdir()) - before - {pipeline_root / DOCKER_WORK, pipeline_root / CACHE}
    )
    run_dirs = sorted(new, key=lambda p: p.stat().st_mtime)
    if not run_dirs:
        raise PipelineError(f"{pipeline_root}: the local run left no outputs")
    return run_dirs[-1], summarize(run_dirs[-1])


DOCKER_WORK = "work"
CACHE = ".kfp_cache"
# What a task container gets of this process's environment: on a cluster the same settings
# reach the pods from secrets (the MLflow login) and the task's environment (RAY_ADDRESS).
TASK_ENV = re.compile(r"MLFLOW_\w+|RAY_ADDRESS|RAY_AUTH_\w+")


def task_env() -> dict[str, str]:
    """The MLflow settings (tracking URI, login) and the Ray cluster's address and token."""
    return {name: value for name, value in os.environ.items() if TASK_ENV.fullmatch(name)}


def _docker_work_dir(pipeline_root: Path) -> Path:
    """The tasks' working directory with `--docker` (inside the mounted pipeline root)."""
    work = pipeline_root / DOCKER_WORK
    work.mkdir(parents=True, exist_ok=True)
    return work


def _cache_root(pipeline_root: Path, code: str) -> Path:
    """Where KFP's local cache keeps this run's entries. KFP keys an entry on the task's image
    name, command and inputs; not on the code behind the name (a rebuilt image, edited
    sources) nor on the tracking server the environment names. A cache of its own for each
    makes a change of either run every task again."""
    key = f"{code}\n{os.environ.get('MLFLOW_TRACKING_URI', '')}"
    return pipeline_root / CACHE / hashlib.sha256(key.encode()).hexdigest()[:16]


def _source_fingerprint() -> str:
    """A digest of the digitops sources the subprocess tasks import."""
    import digitops

    digest = hashlib.sha256()
    for path in sorted(Path(digitops.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _check_images(pipeline_file: Path) -> str:
    """Fail in one line, before any task, when Docker or a task's image is not there; return
    the images' ids."""
    import yaml

    import docker

    spec = next(yaml.safe_load_all(pipeline_file.read_text()))  # then the platform spec
    executors = spec.get("deploymentSpec", {}).get("executors", {}).values()
    images = sorted({e["container"]["image"] for e in executors if "container" in e})
    try:
        client = docker.from_env()
        found = {image: client.images.list(name=image) for image in images}
    except docker.errors.DockerException as exc:
        raise PipelineError(f"--docker needs a Docker engine: {exc}") from None
    missing = [image for image, listed in found.items() if not listed]
    if missing:
        raise PipelineError(
            f"image {', '.join(missing)} not found; build it with `make images` "
            "(or pull it), or run without --docker"
        )
    return " ".join(listed[0].id for listed in found.values())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the local runner colours task names


class _RunLog(io.TextIOBase):
    """What a person sees of a local run: one line as each task starts and ends (with its time)
    and the tasks' progress lines (`digitops.progress`); with `verbose`, everything the tasks
    and the KFP runner print (executor JSON, library logs). Either way it remembers the last
    digitops error line, and the output of the task that is running, to show if it fails."""

    _ERROR = re.compile(r"digitops(?:\.\w+)+?\.(\w+Error): (.*)")
    _STARTED = re.compile(r"Executing task '?([\w-]+)'?")
    _FINISHED = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
    TAIL = 25  # lines of a failed task's own output shown without --verbose

    def __init__(self, stream: TextIO, verbose: bool = False) -> None:
        self.stream = stream
        self.verbose = verbose
        self.last_error: str | None = None
        self.task: str | None = None
        self.started = time.monotonic()
        self.tail: collections.deque[str] = collections.deque(maxlen=self.TAIL)
        self._partial = ""

    def write(self, text: str) -> int:
        if self.verbose:
            self.stream.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        for match in self._ERROR.finditer(line):
            self.last_error = f"{match.group(1)}: {match.group(2).strip()}"
        if unreachable := tracking_unreachable(line):
            self.last_error = f"{unreachable} (`--cache` skips the tasks that finished)"
        if started := self._STARTED.search(line):
            self.task, self.started = started.group(1), time.monotonic()
            self.tail.clear()
            self.last_error = None  # what an earlier task said is not this one's failure
            self._say(f"{_clock()} {self.task} started")
        elif finished := self._FINISHED.search(line):
            took = duration(time.monotonic() - self.started)
            status = finished.group(2).lower()
            self._say(f"{_clock()} {finished.group(1)} {status} in {took}")
            if status != "success" and not self.verbose and self.tail:
                self._say(f"  last lines of {finished.group(1)}'s output:")
                for kept in self.tail:
                    self._say(f"  | {kept}")
        elif PROGRESS in line:
            self._say(f"  {self.task}: {line.split(PROGRESS, 1)[1]}")
        elif line.strip():
            self.tail.append(line.strip()[:300])

    def _say(self, line: str) -> None:
        if not self.verbose:
            self.stream.write(line + "\n")
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _failure_line(message: str, error: str | None) -> str:
    plain = _ANSI.sub("", message)
    task = re.search(r"Inner task failed: '?([\w-]+)'?", plain)
    where = f"task '{task.group(1)}'" if task else "a task"
    return f"pipeline stopped: {where} failed: {error or 'see its log above'}"


def summarize(run_dir: Path) -> list[TaskSummary]:
    """Read each task's `executor_output.json` in a local run directory."""
    tasks = []
    for output_file in sorted(run_dir.glob("**/executor_output.json")):  # conditions nest tasks
        executor_output = json.loads(output_file.read_text())
        summary = TaskSummary(
            output_file.parent.name, outputs=dict(executor_output.get("parameterValues", {}))
        )
        for name, entry in executor_output.get("artifacts", {}).items():
            artifact = entry["artifacts"][0]
            summary.artifacts[name] = artifact["uri"]
            summary.metadata[name] = artifact.get("metadata", {})
        tasks.append(summary)
    return tasks


def submit(
    host: str,
    pipeline_file: Path,
    arguments: dict[str, Any],
    experiment: str,
    wait: bool,
    timeout_s: int,
    no_cache: bool = False,
) -> tuple[str, str]:
    """Upload the pipeline (a new version when it exists) and start a run; (run id, state).
    With `no_cache` every task runs again: the run is started from the compiled file with
    caching turned off (KFP applies that override only to a run started from a file)."""
    import datetime

    if not pipeline_file.is_file():
        raise PipelineError(
            f"{pipeline_file}: compiled pipeline not found; run `digitops pipeline compile`"
        )
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    try:
        client = kfp_client(host)
        pipeline_id = client.get_pipeline_id(_pipeline_name())
        if pipeline_id is None:
            uploaded = client.upload_pipeline(str(pipeline_file), pipeline_name=_pipeline_name())
            pipeline_id = uploaded.pipeline_id
            version_id = (
                client.list_pipeline_versions(pipeline_id).pipeline_versions[0].pipeline_version_id
            )
        else:
            version = client.upload_pipeline_version(
                str(pipeline_file),
                pipeline_version_name=f"{_pipeline_name()}-{stamp}",
                pipeline_id=pipeline_id,
            )
            version_id = version.pipeline_version_id
        experiment_id = client.create_experiment(experiment).experiment_id
        source: dict[str, Any] = (
            {"pipeline_package_path": str(pipeline_file), "enable_caching": False}
            if no_cache
            else {"pipeline_id": pipeline_id, "version_id": version_id}
        )
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=f"digitops-{stamp}",
            params=arguments,
            **source,
        )
        state = "SUBMITTED"
        if wait:
            state = str(client.wait_for_run_completion(run.run_id, timeout=timeout_s).state)
    except Exception as exc:  # kfp raises transport and API errors of many types
        raise PipelineError(f"{host}: {short_error(exc)}") from None
    return run.run_id, state


def kfp_client(host: str) -> Any:
    """A `kfp.Client` on `host` that keeps quiet: the client warns about old server versions
    and urllib3 about each retry (on the child logger: the client resets the level of
    "urllib3"); users need the outcome, as one line (`short_error`)."""
    import kfp

    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"kfp\.")
    return kfp.Client(host=host)


def _pipeline_name() -> str:
    from digitops.pipeline.dag import PIPELINE_NAME

    return PIPELINE_NAME


def short_error(exc: Exception) -> str:
    from urllib3.exceptions import MaxRetryError

    if isinstance(exc, MaxRetryError):
        cause = exc.reason.__class__.__name__ if exc.reason else "no answer"
        return f"cannot reach the KFP API ({cause})"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"the KFP API refused the request: {exc.__class__.__name__} {first}"[:300]
