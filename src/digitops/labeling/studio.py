"""Label Studio, through its REST API: a labeling batch in as tasks with pre-annotations,
finished annotations back into the request store as labels, the service connected as ML
backend.

Images reach Label Studio as local files: `push` writes each one as a PNG under Label Studio's
`LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT` and adds a local-files storage for that folder to the
project, so the tasks' `/data/local-files/?d=...` URLs load. Settings come from the environment
variables Label Studio itself reads (`LABEL_STUDIO_URL`, `LABEL_STUDIO_API_KEY`: a personal
access token or a legacy token) or from options.

The REST API is called with httpx, not the Label Studio SDK: label-studio-sdk 2.0 requires
opencv-python<5 (the GUI build, which needs libGL), and the project has Albumentations'
opencv-python-headless 5; the two cannot share an environment, and the SDK's client is a
generated wrapper over these same few endpoints.

Nothing is half done: `push` reads every image before it talks to Label Studio and imports the
tasks in one request; `pull` checks every annotation before it keeps any label, and keeps them
all or none. Pulling again adds only what changed in Label Studio: an annotation is kept again
only when it differs from the last one pulled for its request. A label whose annotation was
deleted in Label Studio stays in the store (labels are never deleted) and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from http.client import HTTPException
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from digitops.errors import DigitopsError, StoreError
from digitops.fileio import atomic_write_bytes
from digitops.labeling.batches import Batch, batch_images
from digitops.labeling.tasks import (
    CLASSES,
    IMAGE,
    Credentials,
    choice_of,
    image_png,
    labeling_config,
    prediction,
)
from digitops.store.backends import Backend
from digitops.store.reader import open_store, read_lines
from digitops.store.writer import Correction, StoreWriter

PROJECT = "digitops digits"
MAX_PAGES = 10_000
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
    gone: int  # requests labeled from an annotation since deleted in Label Studio (kept)


class Studio:
    """One Label Studio server and its digitops project."""

    def __init__(self, settings: StudioSettings, title: str = PROJECT) -> None:
        if not settings.api_key:
            raise LabelingError(
                "no Label Studio API key: set LABEL_STUDIO_API_KEY (a personal access token, "
                "Account & Settings in Label Studio) or pass --api-key"
            )
        import httpx

        self.settings, self.title = settings, title
        self.url = settings.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise LabelingError(
                f"{settings.url}: Label Studio's URL starts with http:// or https://"
            )
        self.credentials = Credentials(self.url, settings.api_key)
        try:
            self.http = httpx.Client(base_url=self.url, timeout=30)
        except httpx.InvalidURL as exc:
            raise LabelingError(f"{settings.url}: not a URL ({exc})") from None
        self.page_size = 500

    def project_id(self, create: bool = True) -> int:
        """The project named `title` (made, with the digit labeling config, if missing)."""
        for project in self._pages("/api/projects", {"title": self.title}):
            if project.get("title") == self.title:  # the server matches titles by substring
                return int(project["id"])
        if not create:
            raise LabelingError(f"{self.url}: no project '{self.title}' (digitops labels push)")
        config = {"title": self.title, "label_config": labeling_config()}
        return int(self._call("POST", "/api/projects", json=config)["id"])

    def push(self, batch: Batch) -> Pushed:
        """Import `batch` as tasks, each with the model's answer as pre-annotation."""
        root = self.settings.local_files_document_root
        if root is None:
            raise LabelingError(
                "where does Label Studio serve local files from? Set "
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (as for Label Studio) or pass --files-root"
            )
        try:  # every image first: one gone, nothing imported
            images = batch_images(batch)
        except StoreError as exc:
            raise LabelingError(f"{exc}; nothing was imported") from None
        project = self.project_id()
        there = {str(t.get("data", {}).get("request_id")) for t in self._tasks(project, None)}
        self._storage(project, root / FOLDER)
        version = batch.model_version
        folder = root / FOLDER / batch.batch_id
        tasks = []
        for item, image in zip(batch.items, images, strict=True):
            if item["request_id"] in there:
                continue
            path = folder / f"{item['request_id']}.png"
            _write(path, image_png(image))
            data = {
                IMAGE: f"/data/local-files/?d={path.relative_to(root)}",
                "request_id": item["request_id"],
                "batch": batch.batch_id,
                "uncertainty": item["uncertainty"],
            }
            pre = prediction(item["predicted"], item["confidence"], version)
            tasks.append({"data": data, "predictions": [pre]})
        if tasks:  # one request: Label Studio imports all of them or none
            self._call("POST", f"/api/projects/{project}/import", json=tasks)
            # People labeling see the predictions of the project's model version only (and
            # Label Studio takes only a version it holds predictions of: after the import).
            self._call("PATCH", f"/api/projects/{project}", json={"model_version": version})
        return Pushed(project, len(tasks), len(batch.items) - len(tasks))

    def pull(self, uri: str) -> Pulled:
        """Keep every finished annotation as a label of its request (source `label-studio`,
        the annotator, the time), all or none; what was pulled before is not kept twice."""
        backend = open_store(uri)  # an existing store: a writer would make one at a wrong path
        project = self.project_id(create=False)
        emails = {user.get("id"): user.get("email") for user in self._pages("/api/users", {})}
        latest: dict[str, tuple[int, dict[str, Any]]] = {}  # request -> (task, annotation)
        not_ours = 0
        for task in self._tasks(project, "all"):
            request = (task.get("data") or {}).get("request_id")
            done = [
                a
                for a in task.get("annotations") or []
                if not a.get("was_cancelled") and (a.get("updated_at") or a.get("created_at"))
            ]
            if not done:
                continue
            if request is None:
                not_ours += 1
                continue
            annotation = max(done, key=_when)
            known = latest.get(str(request))
            if known is None or _when(annotation) > _when(known[1]):
                latest[str(request)] = (int(task["id"]), annotation)
        pulled = _pulled(backend, project)
        corrections, unchanged = [], 0
        for request, (task_id, annotation) in sorted(latest.items()):
            label = choice_of(annotation.get("result") or [])
            if label not in CLASSES:
                raise LabelingError(
                    f"task {task_id} (request {request}): the annotation chose {label!r}, not one "
                    f"of the classes {', '.join(CLASSES)}; correct it in Label Studio and pull "
                    "again (nothing was pulled)"
                )
            when = _when(annotation)
            reference = f"{_project_ref(project)}/annotations/{annotation['id']}@{when.isoformat()}"
            if pulled.get(request) == reference:
                unchanged += 1
                continue
            corrections.append(
                Correction(
                    request_id=request,
                    label=label,
                    source=SOURCE,
                    replace=True,  # a label given in Label Studio outranks a quick correction
                    annotator=emails.get(annotation.get("completed_by")) or "unknown",
                    reference=reference,
                    labeled_at=when.timestamp(),
                )
            )
        try:
            StoreWriter(uri, source=SOURCE).label(corrections, CLASSES)
        except StoreError as exc:  # a request (and its image) gone from the store, a full disk
            raise LabelingError(f"{exc} (nothing was pulled)") from None
        gone = len(set(pulled) - set(latest))
        return Pulled(project, len(corrections), unchanged, not_ours, gone)

    def connect(self, service: str) -> int:
        """Connect the digitops service at `service` as the project's ML backend: Label Studio
        checks it answers, and asks it for pre-annotations of new tasks. Returns its id."""
        url = service.rstrip("/") + "/label-studio"
        project = self.project_id()
        backends = self._pages("/api/ml", {"project": project})
        backend = next((b for b in backends if b.get("url") == url), None)
        if backend is None:
            backend = self._call(
                "POST",
                "/api/ml",
                json={"url": url, "project": project, "title": "digitops", "is_interactive": False},
            )
        if backend.get("model_version"):  # people labeling see this version's predictions
            update = {"model_version": backend["model_version"]}
            self._call("PATCH", f"/api/projects/{project}", json=update)
        return int(backend["id"])

    def _tasks(self, project: int, fields: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"project": project}
        if fields:
            params["fields"] = fields
        return self._pages("/api/tasks", params)

    def _storage(self, project: int, folder: Path) -> None:
        """A local-files storage for `folder`: Label Studio serves only files under one."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabelingError(
                f"{folder}: cannot write the images there ({exc.strerror})"
            ) from None
        storages = self._pages("/api/storages/localfiles", {"project": project})
        if not any(storage.get("path") == str(folder) for storage in storages):
            storage = {
                "project": project,
                "path": str(folder),
                "title": "digitops batches",
                "use_blob_urls": True,
            }
            self._call("POST", "/api/storages/localfiles", json=storage)

    def _pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a list: a plain list, or pages (`results` and `next`, or `tasks` and
        `total`) followed to the last, whatever page size the server allows."""
        found: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            answer = self._call(
                "GET", path, params=params | {"page": page, "page_size": self.page_size}
            )
            if isinstance(answer, list):
                return found + answer
            items = answer.get("results", answer.get("tasks")) if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise LabelingError(f"Label Studio at {self.url}: {path} did not answer a list")
            found += items
            total = answer.get("total")
            if (
                not items
                or ("next" in answer and not answer["next"])
                or (isinstance(total, int) and len(found) >= total)
                or ("next" not in answer and not isinstance(total, int))  # not paged
            ):
                return found
        raise LabelingError(f"Label Studio at {self.url}: {path} has over {MAX_PAGES} pages")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; Label Studio's failures as one line each."""
        import urllib.error

        import httpx

        try:
            headers = {"Authorization": self.credentials.header()}
            answer = self.http.request(method, path, headers=headers, **kwargs)
        except urllib.error.HTTPError as exc:  # exchanging the personal access token
            if exc.code == 401:
                raise self._refused(401) from None
            raise LabelingError(
                f"Label Studio at {self.url} answered the token exchange with {exc.code}"
            ) from None
        except (httpx.RequestError, OSError, HTTPException) as exc:  # refused, reset, timed out
            reason = getattr(exc, "reason", None) or exc
            raise LabelingError(
                f"cannot reach Label Studio at {self.url} ({reason}); is it running "
                "(label-studio start)?"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:  # the token exchange answered otherwise
            raise LabelingError(
                f"Label Studio at {self.url} did not exchange the token ({exc!r})"
            ) from None
        if answer.status_code == 401:
            raise self._refused(401)
        if not answer.is_success:
            raise LabelingError(
                f"Label Studio at {self.url} answered {method} {path} with "
                f"{answer.status_code}: {' '.join(answer.text[:300].split())}"
            )
        try:
            return answer.json() if answer.content else None
        except ValueError:
            raise LabelingError(f"Label Studio at {self.url}: {path} did not answer JSON") from None

    def _refused(self, status: int) -> LabelingError:
        return LabelingError(
            f"Label Studio at {self.url} refused the API key ({status}): use a personal access "
            "token from Account & Settings (LABEL_STUDIO_API_KEY or --api-key)"
        )


def _project_ref(project: int) -> str:
    return f"label-studio:projects/{project}"


def _pulled(backend: Backend, project: int) -> dict[str, str]:
    """Per request, the reference of the last label pulled from this project (one read of the
    store's labels, not one per request)."""
    prefix = _project_ref(project) + "/"
    last: dict[str, str] = {}
    for entry in sorted(read_lines(backend, "labels/"), key=lambda e: e["time"]):
        if entry.get("source") == SOURCE and str(entry.get("reference", "")).startswith(prefix):
            last[entry["request_id"]] = entry["reference"]
    return last


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise LabelingError(f"{path}: cannot write the image there ({exc.strerror})") from None


def _when(annotation: dict[str, Any]) -> datetime:
    value = str(annotation.get("updated_at") or annotation.get("created_at"))
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise LabelingError(f"annotation {annotation.get('id')}: no time in '{value}'") from None
