"""The digitops pipeline: prepare → tune → train → evaluate, explain, drift → gated register.

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
    description="Handwritten digits: prepare (Albumentations) → tune (Ray Tune) → "
    "train (Lightning) → evaluate, explain (Captum), drift (Evidently) → register (MLflow "
    "Model Registry, behind a quality gate).",
)
def digits_pipeline(
    source: str = "mnist",
    limit: int = 0,
    tune_trials: int = 16,
    epochs: int = 15,
    seed: int = 42,
    accuracy_threshold: float = 0.995,
    current_data: str = "",
    drift_blocks_promotion: bool = True,
    approval: str = "manual",
    model_name: str = "digit-classifier",
    deploy_target: str = "local",
    smoke_min_accuracy: float = 0.9,
    mlflow_tracking_uri: str = "",
) -> None:
    """Parameters: data source, image limit (0 = all), search trials (0 = train on the configured
    hyper-parameters), epochs, seed, accuracy threshold, the data to check for drift (a path the
    tasks can read; empty = the test split), whether drift blocks promotion, approval ('manual':
    a person promotes the candidate; 'auto': production on a pass), the registered model's name,
    where a version that passed is deployed ('local' or 'kubernetes') and the smoke-test accuracy
    it must reach there, and the MLflow tracking
    URI (empty = $MLFLOW_TRACKING_URI or SQLite in the task)."""
    prepared = _configure(
        components.prepare(source=source, limit=limit, seed=seed),
        cpu="1",
        memory="2Gi",
        name="prepare",
    )
    tuned = _configure(
        components.tune(
            dataset=prepared.outputs["dataset"],
            trials=tune_trials,
            seed=seed,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="2",
        memory="6Gi",
        name="tune",
    )
    trained = _configure(
        components.train(
            dataset=prepared.outputs["dataset"],
            params=tuned.outputs["best_params"],
            epochs=epochs,
            seed=seed,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="2",
        memory="4Gi",
        name="train",
    )
    evaluated = _configure(
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
    _configure(
        components.explain(
            dataset=prepared.outputs["dataset"],
            model=trained.outputs["model"],
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="2",
        memory="2Gi",
        name="explain",
    ).after(evaluated)
    drifted = _configure(
        components.drift(
            dataset=prepared.outputs["dataset"],
            model=trained.outputs["model"],
            current_data=current_data,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="1",
        memory="4Gi",
        name="drift",
    )
    # The accuracy rule decides in the DAG whether to register at all; the register task applies
    # the whole gate (accuracy, no regression against production, drift) before any alias moves.
    with dsl.If(evaluated.outputs["Output"] == True, name="accuracy-gate"):  # noqa: E712
        registered = _configure(
            components.register(
                model=trained.outputs["model"],
                evaluation=evaluated.outputs["evaluation"],
                drift_verdict=drifted.outputs["verdict"],
                model_name=model_name,
                accuracy_threshold=accuracy_threshold,
                drift_blocks_promotion=drift_blocks_promotion,
                approval=approval,
                pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                mlflow_tracking_uri=mlflow_tracking_uri,
            ),
            cpu="1",
            memory="2Gi",
            name="register",
        )
        with dsl.If(registered.outputs["Output"] == True, name="registry-gate"):  # noqa: E712
            _configure(
                components.deploy(
                    dataset=prepared.outputs["dataset"],
                    registered=registered.outputs["registered"],
                    target=deploy_target,
                    min_accuracy=smoke_min_accuracy,
                    mlflow_tracking_uri=mlflow_tracking_uri,
                ),
                cpu="1",
                memory="2Gi",
                name="deploy",
            )
