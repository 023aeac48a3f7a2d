"""The model card of a registered version (Mitchell et al., 2019), in Markdown and HTML.

Every section is filled from the run: the model's own card (`model.json`: data, training,
calibration), `evaluate`'s metrics and figures, `explain`'s attributions, `drift`'s verdict and
the gate's decision on every rule. `register` writes it, logs it to MLflow with the version and
hands it to KFP (its HTML and Markdown outputs show in the run's UI).
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitops.contracts import Behavior, DriftVerdict, Evaluation
from digitops.fileio import atomic_dir
from digitops.model.artifact import INPUT_SPEC, ModelCard
from digitops.model.calibration import DEFAULT_CONFIDENCE_FLOOR
from digitops.registry import GateDecision
from digitops.reports import figure_html, html_page, table_html
from digitops.stages.report_plots import unsure_table

MARKDOWN = "model_card.md"
HTML = "model_card.html"
FIGURES = {  # file in the model card directory: (where it comes from, caption)
    "confusion_matrix.png": ("evaluation", "confusion matrix on the test split"),
    "calibration.png": ("evaluation", "calibration curve on the test split"),
    "attributions.png": ("explanation", "attributions (red: for the predicted digit)"),
}


@dataclass(frozen=True)
class CardInputs:
    """What the card is made of: one registered version and everything its run produced."""

    model_name: str
    version: int
    card: ModelCard
    evaluation: Evaluation
    decision: GateDecision
    lineage: dict[str, str]
    drift: DriftVerdict | None
    evaluation_dir: Path
    explanation_dir: Path | None


def write(inputs: CardInputs, out_dir: Path) -> tuple[Path, Path]:
    """Write `model_card.md`, `model_card.html` and their figures into `out_dir` (replaced
    whole: an earlier card there goes, anything else is refused)."""
    with atomic_dir(out_dir, marker=HTML) as tmp:
        figures = {}
        for name, (source, caption) in FIGURES.items():
            directory = inputs.evaluation_dir if source == "evaluation" else inputs.explanation_dir
            if directory is not None and (directory / name).is_file():
                shutil.copyfile(directory / name, tmp / name)
                figures[name] = caption
        sections = _sections(inputs)
        title = f"Model card: {inputs.model_name} version {inputs.version}"
        (tmp / MARKDOWN).write_text(_markdown(title, sections, figures))
        (tmp / HTML).write_text(_html(title, sections, figures, tmp))
    return out_dir / MARKDOWN, out_dir / HTML


_STYLE = "td{text-align:left;vertical-align:top}body{max-width:60em}"  # prose in the cells

# A section: a heading, then paragraphs (str), tables ((header, rows)) and figures ("fig:NAME").
Block = str | tuple[list[str], list[list[Any]]]


def _sections(i: CardInputs) -> list[tuple[str, list[Block]]]:
    return [
        ("Gate verdict", _gate(i)),
        ("Intended use", _intended_use(i)),
        ("Data", _data(i)),
        ("Training", _training(i)),
        ("Performance on the test split", _performance(i)),
        ("Calibration", _calibration(i)),
        ("Behavioral tests", _behavior(i)),
        ("Explanations", _explanations(i)),
        ("Drift baseline", _drift(i)),
        ("Known limits", _limits(i)),
    ]


def _gate(i: CardInputs) -> list[Block]:
    verdict = "passed every rule" if i.decision.passed else "failed"
    rows = [[r.name, "pass" if r.passed else "FAIL", r.detail] for r in i.decision.rules]
    return [f"The gate {verdict}.", (["rule", "result", "figures"], rows)]


def _intended_use(i: CardInputs) -> list[Block]:
    card, cal = i.card, i.evaluation.calibration
    floor = str(DEFAULT_CONFIDENCE_FLOOR)
    return [
        f"Reads one handwritten digit ({', '.join(card.class_names)}) per image: {INPUT_SPEC}. "
        "The service (`digitops serve`, Lambda) turns photos and drawings of any size into that "
        "input first.",
        f"Answers below a calibrated confidence of {DEFAULT_CONFIDENCE_FLOOR:.0%} are `unsure`: "
        f"{cal['unsure'][floor]:.2%} of the test digits, holding {cal['errors_caught'][floor]} "
        f"of the {cal['errors']} errors. Treat them as a question to the user.",
        "Out of scope: images that hold no single digit. On such images the behavioral tests "
        "found "
        + ", ".join(
            f"{t['rate']:.1%} of {name} images answered with high confidence"
            for name, t in i.evaluation.behavior.items()
            if t["kind"] == "directional"
        )
        + ".",
    ]


def _data(i: CardInputs) -> list[Block]:
    data = i.card.dataset
    rows = [[split, size] for split, size in data.sizes.items()]
    production = i.lineage.get("production_data", "none")
    return [
        f"Dataset version `{data.version}` at `{data.path}`.",
        f"Production data: {production}.",
        (["split", "images"], rows),
    ]


def _training(i: CardInputs) -> list[Block]:
    card = i.card
    params = ", ".join(
        f"{section}.{key}={value}"
        for section, values in card.hyperparameters.items()
        for key, value in values.items()
        if section in ("model", "train") and key not in ("progress", "threads")
    )
    return [
        f"{card.architecture}, {card.parameters:,} parameters, {card.metrics.epochs} epochs in "
        f"{card.metrics.train_seconds:.0f} s; validation accuracy "
        f"{card.metrics.val_accuracy:.2%}. MLflow run `{card.mlflow_run_id or 'none'}`, "
        f"source commit `{i.lineage.get('source_commit', 'unknown')}`, pipeline run "
        f"`{i.lineage.get('pipeline_run') or 'none'}`, trigger: {i.lineage.get('trigger')}.",
        f"Hyper-parameters: {params}.",
    ]


def _performance(i: CardInputs) -> list[Block]:
    e = i.evaluation
    rows = [
        [name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", int(v["support"])]
        for name, v in e.per_class.items()
    ]
    return [
        f"Accuracy {e.test_accuracy:.2%} ({e.test_misclassified} of {e.test_images} wrong), "
        f"macro F1 {e.test_macro_f1:.4f}.",
        (["class", "precision", "recall", "F1", "test digits"], rows),
        "fig:confusion_matrix.png",
    ]


def _calibration(i: CardInputs) -> list[Block]:
    cal = i.evaluation.calibration
    fitted = i.card.calibration
    return [
        (
            f"Temperature {cal['temperature']:.3f}, fitted on the validation split "
            f"({fitted.images} images)."
            if fitted
            else "No temperature: the model was trained before calibration (probabilities are "
            "the plain softmax)."
        )
        + f" Expected calibration error on the test split: {cal['ece_before']:.4f} before, "
        f"{cal['ece_after']:.4f} after.",
        "fig:calibration.png",
        unsure_table(cal),
    ]


def _behavior(i: CardInputs) -> list[Block]:
    rows = [
        [name, t["kind"], t["description"], f"{t['rate']:.1%}", t["images"]]
        for name, t in i.evaluation.behavior.items()
    ]
    return [
        "Invariance: the share of answers a small change keeps. Directional: the share of "
        "non-digits answered with high confidence.",
        (["test", "kind", "what", "rate", "images"], rows),
    ]


def _explanations(i: CardInputs) -> list[Block]:
    if i.explanation_dir is None or not (i.explanation_dir / "attributions.png").is_file():
        return ["No explanation was computed for this version (`digitops explain`)."]
    return [
        "Captum attributions of test digits of every class and of misclassified ones; the "
        "service answers the same question per request (`POST /explain`).",
        "fig:attributions.png",
    ]


def _drift(i: CardInputs) -> list[Block]:
    d = i.drift
    if d is None:
        return ["No drift check ran with this registration."]
    reference = ", ".join(f"{k}: {v}" for k, v in d.reference.items())
    verdict = "drifted" if d.drifted else "did not drift"
    columns = ", ".join(d.drifted_columns) or "none"
    return [
        f"Reference: {reference}. The checked data {verdict}: {d.drifted_share:.0%} of "
        f"{len(d.columns)} columns (threshold {d.drift_share_threshold:.0%}); drifted: "
        f"{columns}. `digitops monitor` compares production traffic with this baseline."
    ]


def _limits(i: CardInputs) -> list[Block]:
    e = i.evaluation
    names = list(e.per_class)
    recall = sorted(names, key=lambda n: e.per_class[n]["recall"])[:3]
    cells = [
        (e.confusion_matrix[a][b], names[a], names[b])
        for a in range(len(names))
        for b in range(len(names))
        if a != b and e.confusion_matrix[a][b]
    ]
    confused = sorted(cells, reverse=True)[:3]
    weakest = sorted(e.behavior.items(), key=lambda kv: _badness(kv[1]), reverse=True)[:2]
    return [
        "Lowest recall: "
        + ", ".join(f"{n} ({e.per_class[n]['recall']:.2%})" for n in recall)
        + ".",
        "Most frequent confusions (true → predicted): "
        + (", ".join(f"{a} → {b} ({count})" for count, a, b in confused) or "none")
        + ".",
        "Weakest behavior: "
        + ", ".join(f"{name}: {t['description']}, {t['rate']:.1%}" for name, t in weakest)
        + ".",
        f"Trained on {', '.join(f'{s} {n}' for s, n in i.card.dataset.sizes.items())} images: "
        "handwriting unlike it (other scripts, printed forms, photos of paper) may drift; watch "
        "`digitops monitor`.",
    ]


def _badness(test: Behavior) -> float:
    """How far a behavioral result is from ideal (1 for invariance, 0 for directional)."""
    return 1 - test["rate"] if test["kind"] == "invariance" else test["rate"]


def _markdown(title: str, sections: list[tuple[str, list[Block]]], figures: dict) -> str:
    lines = [f"# {title}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for block in blocks:
            if isinstance(block, tuple):
                header, rows = block
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            elif block.startswith("fig:"):
                name = block.removeprefix("fig:")
                if name in figures:
                    lines.append(f"![{figures[name]}]({name})")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def _html(title: str, sections: list[tuple[str, list[Block]]], figures: dict, out: Path) -> str:
    parts = [f"<style>{_STYLE}</style><h1>{html.escape(title)}</h1>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for block in blocks:
            if isinstance(block, tuple):
                parts.append(table_html(*block))
            elif block.startswith("fig:"):
                name = block.removeprefix("fig:")
                if name in figures:
                    parts.append(figure_html(figures[name], out / name))
            else:
                parts.append(f"<p>{_inline_code(html.escape(block))}</p>")
    return html_page(title, "".join(parts))


def _inline_code(text: str) -> str:
    """`code` spans of the Markdown text as <code> in HTML."""
    pieces = text.split("`")
    return "".join(f"<code>{p}</code>" if n % 2 else p for n, p in enumerate(pieces))
