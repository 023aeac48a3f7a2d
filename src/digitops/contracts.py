"""The files stages hand each other, typed: each stage writes one of these and the next reads it.

A stage never imports another stage; it reads the other's output file through the model here
(the model directory's own contract is `digitops.model.artifact`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import TypedDict  # pydantic validates only this one before Python 3.12

from digitops.errors import DataError
from digitops.fileio import read_json, write_json


class StageFile(BaseModel):
    """A JSON file one stage writes and another reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    file_name: ClassVar[str]
    what: ClassVar[str]  # "an evaluation", ...
    command: ClassVar[str]  # the command that writes it

    @classmethod
    def read(cls, path: Path) -> Self:
        """Read the file (or the file of that name in the directory `path`)."""
        file = path / cls.file_name if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"{file}: not found; it should hold {cls.what} from `{cls.command}`")
        try:
            return cls.model_validate(read_json(file))
        except (ValueError, ValidationError):
            raise DataError(f"{file}: not {cls.what} from `{cls.command}`; run it again") from None

    def write(self, path: Path) -> Path:
        """Write into the directory `path` under `file_name`, or to the file `path`."""
        file = path / self.file_name if path.is_dir() else path
        write_json(file, self.model_dump(mode="json"))
        return file


class BestParams(StageFile):
    """`tune` → `train`: the best trial's parameters (empty when nothing was searched)."""

    file_name: ClassVar[str] = "best_params.json"
    what: ClassVar[str] = "a best-parameters file"
    command: ClassVar[str] = "digitops tune"

    searched: bool
    params: dict[str, Any]
    best_val_accuracy: float | None  # the chosen trial's: the cheapest near the top
    top_val_accuracy: float | None = None  # the highest of any trial (None in older files)
    baseline_val_accuracy: float | None
    trial: str | None
    epochs: int | None
    trials: int
    failed_trials: int
    budget: dict[str, Any]
    tune_seconds: float
    mlflow_run_id: str | None


class Calibration(TypedDict):
    """Calibration on the test split, without and with the model's temperature."""

    temperature: float
    ece_before: float
    ece_after: float
    bins_before: list[dict[str, float]]  # the reliability curve: low, high, confidence, ...
    bins_after: list[dict[str, float]]
    unsure: dict[str, float]  # per confidence floor: the share of test digits below it
    errors_caught: dict[str, int]  # per confidence floor: the errors among those
    errors: int


class Behavior(TypedDict):
    """One behavioral test's result (digitops.stages.behavior)."""

    kind: Literal["invariance", "directional"]
    description: str
    rate: float  # answers kept (invariance), or answered with high confidence (directional)
    images: int


class Quality(BaseModel):
    """What the gate judges of one model file on the test split."""

    test_accuracy: float
    test_macro_f1: float
    test_misclassified: int
    test_images: int
    macro: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    calibration: Calibration
    behavior: dict[str, Behavior]  # by test name


class Int8Quality(Quality):
    """The int8 model beside the fp32 one (`model.int8.onnx`), judged as any version is."""

    size_bytes: int
    agreement: float  # share of test digits both files answer alike


class Evaluation(StageFile, Quality):
    """`evaluate` → `register`: test-split metrics of a model (its fp32 file), and of its int8
    file when it has one (models trained before int8 files have none)."""

    file_name: ClassVar[str] = "metrics.json"
    what: ClassVar[str] = "an evaluation"
    command: ClassVar[str] = "digitops evaluate"

    model_dir: str
    dataset_version: str
    int8: Int8Quality | None = None


class DriftVerdict(StageFile):
    """`drift` → `register`: whether current data drifted from the training data, and why."""

    file_name: ClassVar[str] = "drift.json"
    what: ClassVar[str] = "a drift verdict"
    command: ClassVar[str] = "digitops drift"

    drifted: bool
    drifted_share: float
    drifted_columns: list[str]
    drift_share_threshold: float
    columns: dict[str, dict[str, Any]]
    reference: dict[str, str]
    current: dict[str, str]
    reference_images: int
    current_images: int
    model: str | None
    evidently_version: str
    digitops_version: str


class Registration(StageFile):
    """`register` → `deploy`: which version `register` made (the gate's decision on it is on the
    version's tags; the pipeline deploys only when it went to production)."""

    file_name: ClassVar[str] = "registered.json"
    what: ClassVar[str] = "a registration"
    command: ClassVar[str] = "digitops register"

    model_name: str
    version: int

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def production_uri(self) -> str:
        """What a deployment serves: the `production` alias, which it follows as it moves."""
        return f"models:/{self.model_name}@production"
