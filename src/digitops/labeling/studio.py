"""Label Studio, through its SDK: a labeling batch in as tasks with pre-annotations, finished
annotations back into the request store as labels, the service connected as ML backend.

Images reach Label Studio as local files: `push` writes each one as a PNG under Label Studio's
`LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT` and adds a local-files storage for that folder to the
project, so the tasks' `/data/local-files/?d=...` URLs load. Settings come from the environment
variables Label Studio itself reads (`LABEL_STUDIO_URL`, `LABEL_STUDIO_API_KEY`: a personal
access token or a legacy token) or from options.

Nothing is half done: `push` reads every image before it talks to Label Studio and imports the
tasks in one request; `pull` checks every annotation before it keeps any label, and keeps them
all or none. Pulling again adds only what changed in Label Studio.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from digitops.errors import DigitopsError, StoreError
from digitops.fileio import atomic_write_bytes
from digitops.labeling.batches import Batch, batch_images
from digitops.labeling.tasks import (
    CLASSES,
    IMAGE,
    choice_of,
    image_png,
    labeling_config,
    prediction,
)
from digitops.store.reader import open_store
from digitops.store.writer import Correction, StoreWriter

PROJECT = "digitops digits"
FOLDER = "digitops"  # under the document root: one sub-folder per batch
SOURCE = "label-studio"


class LabelingError(DigitopsError):
    """Label Studio is unreachable, refuses us, or holds annotations we cannot keep."""


class StudioSettings(BaseSettings):
    """Where Label Studio is: the variables it reads itself, so one environment serves both."""

    model_config = SettingsConfigDict(env_prefix="LABEL_STUDIO_", extra="ignore")

    url: str = "http://localhost:8080"
    api_key: str = ""
    local_files_document_root: Path | None = None


@dataclass(frozen=True)
class Pushed:
    project_id: int
    imported: int
    already_there: int


@dataclass(frozen=True)
class Pulled:
    project_id: int
    added: int
    unchanged: int
    not_ours: int  # tasks made in Label Studio without a stored request


class Studio:
    """One Label Studio server and its digitops project."""

    def __init__(self, settings: StudioSettings, title: str = PROJECT) -> None:
        if not settings.api_key:
            raise LabelingError(
                "no Label Studio API key: set LABEL_STUDIO_API_KEY (a personal access token, "
                "Account & Settings in Label Studio) or pass --api-key"
            )
        from label_studio_sdk.client import LabelStudio

        self.settings, self.title = settings, title
        self.url = settings.url.rstrip("/")
        with self._talking():
            self.client = LabelStudio(base_url=self.url, api_key=settings.api_key, timeout=30)

    def project_id(self, create: bool = True) -> int:
        """The project named `title` (made, with the digit labeling config, if missing)."""
        with self._talking():
            for project in self.client.projects.list(title=self.title):
                if project.title == self.title and project.id is not None:
                    return int(project.id)
            if not create:
                raise LabelingError(f"{self.url}: no project '{self.title}' (digitops labels push)")
            made = self.client.projects.create(title=self.title, label_config=labeling_config())
        return int(made.id)

    def push(self, uri: str, batch: Batch) -> Pushed:
        """Import `batch` as tasks, each with the model's answer as pre-annotation."""
        root = self.settings.local_files_document_root
        if root is None:
            raise LabelingError(
                "where does Label Studio serve local files from? Set "
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (as for Label Studio) or pass --files-root"
            )
        images = batch_images(uri, batch)  # every image first: one gone, nothing imported
        project = self.project_id()
        folder = root / FOLDER / batch.batch_id
        with self._talking():
            there = self._request_ids(project)
            self._storage(project, root / FOLDER)
            tasks: list[Any] = []
            for item, image in zip(batch.items, images, strict=True):
                if item["request_id"] in there:
                    continue
                name = f"{item['request_id']}.png"
                atomic_write_bytes(folder / name, image_png(image))
                relative = (folder / name).relative_to(root)
                tasks.append(
                    {
                        "data": {
                            IMAGE: f"/data/local-files/?d={relative}",
                            "request_id": item["request_id"],
                            "batch": batch.batch_id,
                            "uncertainty": item["uncertainty"],
                        },
                        "predictions": [
                            prediction(
                                item["predicted"],
                                item["confidence"],
                                f"{batch.content['model_name']}/{batch.content['model_version']}",
                            )
                        ],
                    }
                )
            if tasks:  # one request: Label Studio imports all of them or none
                self.client.projects.import_tasks(project, request=tasks)
        return Pushed(project, len(tasks), len(batch.items) - len(tasks))

    def pull(self, uri: str) -> Pulled:
        """Keep every finished annotation as a label of its request (source `label-studio`,
        the annotator, the time), all or none; what was pulled before is not kept twice."""
        open_store(uri)  # an existing store: a writer would make one at a wrong path
        project = self.project_id(create=False)
        with self._talking():
            tasks = list(self.client.tasks.list(project=project, fields="all"))
            emails = {user.id: user.email for user in self.client.users.list()}
        found, not_ours = [], 0
        for task in tasks:
            data = task.data or {}
            done = [a for a in task.annotations or [] if not _get(a, "was_cancelled")]
            if "request_id" not in data:
                not_ours += bool(done)
                continue
            if done:
                found.append((task.id, data["request_id"], max(done, key=_when)))
        writer = StoreWriter(uri, source=SOURCE)
        corrections, unchanged = [], 0
        for task_id, request, annotation in found:
            label = choice_of(_get(annotation, "result") or [])
            if label not in CLASSES:
                raise LabelingError(
                    f"task {task_id} (request {request}): the annotation chose {label!r}, not one "
                    f"of the classes {', '.join(CLASSES)}; correct it in Label Studio and pull "
                    "again (nothing was pulled)"
                )
            reference = f"{self.url}/projects/{project}/annotations/{_get(annotation, 'id')}"
            reference += f"@{_when(annotation).isoformat()}"
            try:
                history = writer.labels_of(request)
            except StoreError as exc:
                raise LabelingError(f"{exc} (nothing was pulled)") from None
            if any(entry.get("reference") == reference for entry in history):
                unchanged += 1
                continue
            corrections.append(
                Correction(
                    request_id=request,
                    label=label,
                    source=SOURCE,
                    replace=True,  # a reviewed label in Label Studio outranks a quick correction
                    annotator=emails.get(_get(annotation, "completed_by"), "unknown"),
                    reference=reference,
                    labeled_at=_when(annotation).timestamp(),
                )
            )
        try:
            writer.label(corrections, CLASSES)
        except StoreError as exc:  # a request (and its image) gone from the store, a full disk
            raise LabelingError(f"{exc} (nothing was pulled)") from None
        return Pulled(project, len(corrections), unchanged, not_ours)

    def connect(self, service: str) -> int:
        """Connect the digitops service at `service` as the project's ML backend: Label Studio
        checks it answers, and asks it for pre-annotations of new tasks. Returns its id."""
        url = service.rstrip("/") + "/label-studio"
        project = self.project_id()
        with self._talking():
            for backend in self.client.ml.list(project=project):
                if backend.url == url and backend.id is not None:
                    return int(backend.id)
            made = self.client.ml.create(
                url=url, project=project, title="digitops", is_interactive=False
            )
            self.client.projects.update(project, model_version=made.title or "digitops")
        return int(made.id)

    def _request_ids(self, project: int) -> set[str]:
        return {
            str(task.data["request_id"])
            for task in self.client.tasks.list(project=project)
            if task.data and "request_id" in task.data
        }

    def _storage(self, project: int, folder: Path) -> None:
        """A local-files storage for `folder`: Label Studio serves only files under one."""
        folder.mkdir(parents=True, exist_ok=True)
        for storage in self.client.import_storage.local.list(project=project):
            if storage.path == str(folder):
                return
        self.client.import_storage.local.create(
            project=project, path=str(folder), title="digitops batches", use_blob_urls=True
        )

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """Label Studio's failures as one line each."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except httpx.TransportError as exc:
            raise LabelingError(
                f"cannot reach Label Studio at {self.url} ({type(exc).__name__}: {exc}); "
                "is it running (label-studio start)?"
            ) from None
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise LabelingError(
                    f"Label Studio at {self.url} refused the API key ({exc.status_code}): use a "
                    "personal access token from Account & Settings (LABEL_STUDIO_API_KEY)"
                ) from None
            raise LabelingError(
                f"Label Studio at {self.url} answered {exc.status_code}: {_detail(exc.body)}"
            ) from None


def _get(item: Any, name: str) -> Any:
    """A field of an annotation (a dict or an SDK model, depending on the call)."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _when(annotation: Any) -> datetime:
    value = _get(annotation, "updated_at") or _get(annotation, "created_at")
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("validation_errors") or body)[:300]
    return str(body)[:300]
