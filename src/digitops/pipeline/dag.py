"""The digitops pipeline: prepare → train → evaluate, with per-task resources and retries.

No `from __future__ import annotations`: KFP reads the parameter types. Resource requests and
limits take effect on a cluster. Retries (one, after a short back-off) are there for transient
failures such as an evicted pod; the local runner honours them too, so a task that fails on bad
input fails twice, quickly.
"""

from kfp import dsl

from digitops.pipeline import components

PIPELINE_NAME = "digitops"
RETRIES = 1
RETRY_BACKOFF = "5s"


def _configure(task: dsl.PipelineTask, cpu: str, memory: str, name: str) -> dsl.PipelineTask:
    task.set_display_name(name)
    task.set_cpu_request(cpu).set_cpu_limit(cpu)
    task.set_memory_request(memory).set_memory_limit(memory)
    task.set_caching_options(enable_caching=True)
    task.set_retry(num_retries=RETRIES, backoff_duration=RETRY_BACKOFF)
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Handwritten digits: prepare (Albumentations) → train (Lightning) → "
    "evaluate, tracked in MLflow.",
)
def digits_pipeline(
    source: str = "mnist",
    limit: int = 0,
    epochs: int = 15,
    seed: int = 42,
    accuracy_threshold: float = 0.995,
    mlflow_tracking_uri: str = "",
) -> None:
    """Parameters: data source, image limit (0 = all), epochs, seed, accuracy threshold, and the
    MLflow tracking URI (empty = the component's default: $MLFLOW_TRACKING_URI or SQLite)."""
    prepared = _configure(
        components.prepare(source=source, limit=limit, seed=seed),
        cpu="1",
        memory="2Gi",
        name="prepare",
    )
    trained = _configure(
        components.train(
            dataset=prepared.outputs["dataset"],
            epochs=epochs,
            seed=seed,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="2",
        memory="4Gi",
        name="train",
    )
    _configure(
        components.evaluate(
            dataset=prepared.outputs["dataset"],
            model=trained.outputs["model"],
            accuracy_threshold=accuracy_threshold,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="1",
        memory="2Gi",
        name="evaluate",
    )
