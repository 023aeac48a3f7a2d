"""The registry's gate on real models: a weak one is refused by name, the default one passes
every rule, and each registered version gets a model card filled from its run.

The default model is trained here with the default config on all of MNIST (about 5 minutes on
2 cores): the gate's defaults are set for it, so no smaller model can stand in for it.
"""

import re
from pathlib import Path

import pytest

from digitops.config import Config
from digitops.stages import drift, evaluate, explain, prepare, register, train

from ..conftest import make_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECTIONS = [
    "Gate verdict",
    "Intended use",
    "Data",
    "Training",
    "Performance on the test split",
    "Calibration",
    "Behavioral tests",
    "Explanations",
    "Drift baseline",
    "Known limits",
]


def _registered(config: Config, data: Path, work: Path, complete: bool):
    """Train, evaluate and register; `complete` also explains and checks drift first, as the
    pipeline does, so the card has attributions and a drift baseline."""
    model = train.run(config, data, work / "model").model_dir
    evaluate.run(config, model, data, work / "evaluation")
    explanation = verdict = None
    if complete:
        explanation = work / "explanation"
        explain.run(config, model, data, explanation)
        drift.run(config, data, None, work / "drift", model)
        verdict = work / "drift" / drift.VERDICT
    return register.run(config, model, work / "evaluation", verdict, explanation_dir=explanation)


@pytest.fixture(scope="module")
def weak(tmp_path_factory: pytest.TempPathFactory):
    """Two epochs on 2,000 images (1,800 to train), judged on its 2,000 test digits: about 88 %,
    weak but not degenerate (one epoch answers nearly one class everywhere, which is trivially
    invariant under every perturbation)."""
    work = tmp_path_factory.mktemp("weak")
    config = make_config(work, "prepare.limit=2000", "train.epochs=2")
    prepare.run(config, work / "data")
    return _registered(config, work / "data", work, complete=False)


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory):
    """The default config, all of MNIST; explained and drift-checked, as in the pipeline."""
    work = tmp_path_factory.mktemp("default")
    config = make_config(work, "explain.faithfulness_images=100")
    prepare.run(config, work / "data")
    return _registered(config, work / "data", work, complete=True)


def test_a_weak_model_fails_the_gate_naming_the_class_and_behavioral_rules(weak):
    assert not weak.gate_passed and weak.aliases == []
    failed = {reason.split(":")[0] for reason in weak.gate_reasons}
    assert {"accuracy", "class-recall"} <= failed
    assert any(name.startswith(("invariance/", "directional/")) for name in failed), failed
    assert re.search(r"recall below 0\.98 for .*\(0\.\d{4}\)", "; ".join(weak.gate_reasons))


def test_the_default_model_passes_every_rule(default):
    assert default.gate_passed, default.gate_reasons
    assert default.aliases == ["candidate"]


@pytest.mark.parametrize("which", ["weak", "default"])
def test_every_card_section_is_filled_from_the_run(which: str, request):
    result = request.getfixturevalue(which)
    markdown = (result.card_dir / "model_card.md").read_text()
    headings = re.findall(r"^## (.+)$", markdown, re.M)
    assert headings == SECTIONS
    bodies = re.split(r"^## .+$", markdown, flags=re.M)[1:]
    for heading, body in zip(SECTIONS, bodies, strict=True):
        assert body.strip(), f"section {heading} is empty"
        assert not re.search(r"\b(None|nan)\b", body), heading
    assert f"version {result.version}" in markdown.splitlines()[0]
    page = (result.card_dir / "model_card.html").read_text()
    assert page.count("data:image/png;base64,") == (3 if which == "default" else 2)
    verdict = "passed every rule" if result.gate_passed else "failed"
    assert f"The gate {verdict}." in markdown
    for reason in result.gate_reasons:  # every failing rule is in the card, by name
        assert f"| {reason.split(':')[0]} | FAIL |" in markdown
