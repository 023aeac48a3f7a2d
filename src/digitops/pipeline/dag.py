"""The digitops pipeline: prepare → tune → train → evaluate, explain, drift → gated register.

No `from __future__ import annotations`: KFP reads the parameter types. Resource requests and
limits take effect on a cluster. Retries (one, after a short back-off) are there for transient
failures such as an evicted pod; the local runner honours them too, so a task that fails on bad
input fails twice, quickly.
"""

from kfp import dsl, kubernetes

from digitops.pipeline import components
from digitops.pipeline.parameters import DEFAULTS

PIPELINE_NAME = "digitops"
RETRIES = 1
RETRY_BACKOFF = "5s"
# On Kubernetes every task logs in to MLflow with the login in this secret of the run's
# namespace (scripts/cluster-secrets.sh makes it); without the secret, tasks go anonymous.
MLFLOW_LOGIN_SECRET = "mlflow-client"
MLFLOW_LOGIN_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# The search on a Ray cluster (`ray_address`, e.g. ray://digitops-ray-head-svc:10001) joins it
# with the token in this secret (scripts/cluster-secrets.sh); without it, as a cluster allows.
RAY_AUTH_SECRET = "ray-auth"
RAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def _configure(
    task: dsl.PipelineTask, cpu: str, memory: str, name: str, cache: bool = True
) -> dsl.PipelineTask:
    """Name, MLflow login, resources, retries, and caching: a task whose outputs follow from its
    inputs may be skipped when a run with the same inputs succeeded; one with effects outside
    its outputs (`cache=False`) always runs."""
    task.set_display_name(name)
    kubernetes.use_secret_as_env(
        task,
        secret_name=MLFLOW_LOGIN_SECRET,
        secret_key_to_env={key: key for key in MLFLOW_LOGIN_ENV},
        optional=True,
    )
    task.set_cpu_request(cpu).set_cpu_limit(cpu)
    task.set_memory_request(memory).set_memory_limit(memory)
    task.set_caching_options(enable_caching=cache)
    task.set_retry(num_retries=RETRIES, backoff_duration=RETRY_BACKOFF)
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Handwritten digits: prepare (Albumentations) → tune (Ray Tune) → "
    "train (Lightning) → evaluate, explain (Captum), drift (Evidently) → register (MLflow "
    "Model Registry, behind a quality gate).",
)
def digits_pipeline(
    source: str = DEFAULTS["source"],
    mnist_ratio: float = DEFAULTS["mnist_ratio"],
    limit: int = DEFAULTS["limit"],
    prepare_seed: int = DEFAULTS["prepare_seed"],
    tune_trials: int = DEFAULTS["tune_trials"],
    tune_seed: int = DEFAULTS["tune_seed"],
    ray_address: str = DEFAULTS["ray_address"],
    epochs: int = DEFAULTS["epochs"],
    train_seed: int = DEFAULTS["train_seed"],
    accuracy_threshold: float = DEFAULTS["accuracy_threshold"],
    regression_tolerance: float = DEFAULTS["regression_tolerance"],
    current_data: str = "",
    drift_blocks_promotion: bool = DEFAULTS["drift_blocks_promotion"],
    quality_rules: bool = DEFAULTS["quality_rules"],
    approval: str = DEFAULTS["approval"],
    model_name: str = DEFAULTS["model_name"],
    deploy_target: str = DEFAULTS["deploy_target"],
    smoke_min_accuracy: float = DEFAULTS["smoke_min_accuracy"],
    mlflow_tracking_uri: str = DEFAULTS["mlflow_tracking_uri"],
    trigger: str = "",
) -> None:
    """Parameters (defaults: `digitops.config.Config`): data source (a request store: its
    labeled production images, with `mnist_ratio` MNIST images per production image), image
    limit (0 = all), the
    split seed, search trials (0 = train on the configured hyper-parameters) and seed, the Ray
    cluster the search runs on (empty: $RAY_ADDRESS, else inside the task), epochs,
    the training seed, accuracy threshold, how far below production's test accuracy is still no
    regression, the data to check for drift (a path the tasks can
    read; empty = the test split), whether drift blocks promotion, whether the quality rules
    apply (per-class recall, confusion pairs, calibration, behavioral tests; off for quick runs
    on small data), approval ('manual': a person
    promotes the candidate; 'auto': production on a pass), the registered model's name, where a
    version that passed is deployed ('local' or 'kubernetes') and the smoke-test accuracy it must
    reach there, the MLflow tracking URI (empty = $MLFLOW_TRACKING_URI or SQLite), and why the
    run started (`digitops monitor` passes its reasons as JSON; they become the registered
    version's `trigger` tag)."""
    prepared = _configure(
        components.prepare(
            source=source, mnist_ratio=mnist_ratio, limit=limit, prepare_seed=prepare_seed
        ),
        cpu="1",
        memory="2Gi",
        name="prepare",
    )
    tuned = _configure(
        components.tune(
            dataset=prepared.outputs["dataset"],
            tune_trials=tune_trials,
            tune_seed=tune_seed,
            ray_address=ray_address,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="2",
        memory="6Gi",
        name="tune",
    )
    # A Ray cluster's token (manifests/ray): Ray 2.60 clusters require one of every driver.
    kubernetes.use_secret_as_env(
        tuned,
        secret_name=RAY_AUTH_SECRET,
        secret_key_to_env={key: key for key in RAY_AUTH_ENV},
        optional=True,
    )
    trained = _configure(
        components.train(
            dataset=prepared.outputs["dataset"],
            params=tuned.outputs["best_params"],
            epochs=epochs,
            train_seed=train_seed,
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
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="1",
        memory="2Gi",
        name="evaluate",
    )
    explained = _configure(
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
        cache=False,  # `current_data` names files that can change under the same name
    )
    # The register task registers every trained model and applies the whole gate (accuracy, no
    # regression against production, drift, the quality rules) before any alias moves: the gate
    # is decided there. It writes the model card, shown in the KFP UI and logged to MLflow.
    registered = _configure(
        components.register(
            model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"],
            drift_verdict=drifted.outputs["verdict"],
            explanation=explained.outputs["explanation"],
            model_name=model_name,
            accuracy_threshold=accuracy_threshold,
            regression_tolerance=regression_tolerance,
            drift_blocks_promotion=drift_blocks_promotion,
            quality_rules=quality_rules,
            approval=approval,
            pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            trigger=trigger,
            mlflow_tracking_uri=mlflow_tracking_uri,
        ),
        cpu="1",
        memory="2Gi",
        name="register",
        cache=False,  # it writes to the registry
    )
    # Only a version that went to production is deployed: with approval 'manual' the pipeline
    # deploys nothing, and a running service follows `digitops promote` to the new version.
    with dsl.If(registered.outputs["Output"] == True, name="in-production"):  # noqa: E712
        _configure(
            components.deploy(
                dataset=prepared.outputs["dataset"],
                registered=registered.outputs["registered"],
                deploy_target=deploy_target,
                smoke_min_accuracy=smoke_min_accuracy,
                mlflow_tracking_uri=mlflow_tracking_uri,
            ),
            cpu="1",
            memory="2Gi",
            name="deploy",
            cache=False,  # it deploys
        )
