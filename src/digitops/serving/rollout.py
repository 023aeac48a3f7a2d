"""Champion and challenger in one service: how a candidate version earns production.

The champion is the version the service answers with (`models:/<name>@production`, followed
by `ServedModel`). A challenger, named by an alias too (`models:/<name>@candidate`), gets
traffic in one of two modes:

- `shadow`: every request is predicted by both; the champion's answer goes out, the
  challenger's is kept in the request store beside it (`shadow` in the record), never returned.
- `canary`: a share of clients (`canary_share`, sticky: a client key always lands on the same
  side) is answered by the challenger; the record names the version that answered.

The challenger follows its alias like the champion does, every refresh: a version that gets
`candidate` starts its rollout without a restart, and one the monitor rejects (the alias leaves
it) or promotes (it becomes the champion) stops being a challenger. No challenger, or the same
version as the champion: every request goes to the champion.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Literal

from digitops.errors import ModelError
from digitops.serving.predictor import Predictor, alias_of, load_predictor

log = logging.getLogger(__name__)

Mode = Literal["shadow", "canary"]
MODES: tuple[Mode, ...] = ("shadow", "canary")
CLIENT_HEADER = "x-client-id"  # names the client for sticky canary routing (else its address)


@dataclass(frozen=True)
class RolloutSettings:
    """Which alias is the challenger, and how it gets traffic."""

    source: str  # models:/<name>@<alias>
    mode: Mode
    canary_share: float = 0.1

    def __post_init__(self) -> None:
        if alias_of(self.source) is None:
            raise ModelError(
                f"{self.source}: a challenger is named by an alias, e.g. "
                "models:/digit-classifier@candidate"
            )
        if self.mode not in MODES:
            raise ModelError(f"rollout mode '{self.mode}': one of {', '.join(MODES)}")
        if not 0.0 <= self.canary_share <= 1.0:
            raise ModelError(f"canary share {self.canary_share}: between 0 and 1")


class Challenger:
    """The challenger version a service holds (or none), kept on its alias by `refresh`."""

    def __init__(self, settings: RolloutSettings) -> None:
        self.settings = settings
        self.predictor: Predictor | None = None

    def active(self, champion: Predictor) -> Predictor | None:
        """The challenger, when there is one and it is not the champion's version."""
        found = self.predictor
        if found is None or found.version == champion.version:
            return None
        return found

    def canary(self, client_key: str) -> bool:
        """Whether this client's requests go to the challenger (canary mode): the same key
        always gets the same side, and `canary_share` of keys get the challenger."""
        if self.settings.mode != "canary":
            return False
        digest = hashlib.sha256(client_key.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.settings.canary_share

    def refresh(self) -> bool:
        """Load the version the alias names now (None when it names none); True on a change.
        A registry that cannot be reached leaves things as they are."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        name, alias = alias_of(self.settings.source) or ("", "")
        current = self.predictor.version if self.predictor else None
        version: str | None
        try:
            version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            # MLflow says "... not found" (RESOURCE_DOES_NOT_EXIST for the model,
            # INVALID_PARAMETER_VALUE for the alias) when the alias names no version.
            if "not found" not in exc.message:
                log.warning("%s: cannot follow the alias (%s)", self.settings.source, exc)
                return False
            version = None  # no challenger now
        if version == current:
            return False
        try:
            self.predictor = load_predictor(self.settings.source) if version else None
        except (ModelError, OSError) as exc:
            log.warning("%s: cannot load the challenger (%s)", self.settings.source, exc)
            return False
        log.warning(
            "challenger %s: version %s (was %s), %s",
            self.settings.source,
            version,
            current,
            self.settings.mode,
        )
        return True
