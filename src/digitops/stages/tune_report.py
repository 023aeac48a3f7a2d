"""The `tune` stage's trial table and report: CSV, Markdown (KFP UI), curves PNG, HTML."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from digitops.reports import figure_html, html_page, pyplot, table_html

TRIALS_CSV = "trials.csv"
NODE = "node_id"  # what each trial reports besides its metrics: the Ray node it ran on
TRIALS_MD = "trials.md"
CURVES = "val_accuracy.png"
REPORT = "report.html"


@dataclass(frozen=True)
class Trials:
    """One row per trial (status, epochs run, best val accuracy, model parameters, seconds,
    searched values, error) and the per-epoch validation accuracy of each."""

    table: pd.DataFrame
    curves: dict[str, list[float]]


def trial_table(
    grid: Any,
    max_epochs: int,
    baseline: dict[str, Any] | None,
    parameters: Callable[[dict[str, Any]], int],
) -> Trials:
    """Summarise a Ray Tune `ResultGrid`: the best epoch of each trial, and why it ended.
    `parameters` gives the model size of a trial's searched values."""
    rows, curves = [], {}
    for result in grid:
        if result.config is None:  # never started: the time budget ran out first
            continue
        history = result.metrics_dataframe
        accuracy = (
            list(history["val_accuracy"].astype(float))
            if history is not None and "val_accuracy" in history
            else []
        )
        name = str(result.metrics.get("trial_id") or Path(result.path).name)
        curves[name] = accuracy
        if result.error is not None:
            status = "failed"
        elif len(accuracy) >= max_epochs:
            status = "completed"
        else:
            status = "stopped early"
        rows.append(
            {
                "trial": name,
                "status": status,
                "baseline": baseline is not None and result.config == baseline,
                "epochs": len(accuracy),
                "val_accuracy": max(accuracy) if accuracy else float("nan"),
                "parameters": parameters(result.config),
                "seconds": round(float(result.metrics.get("time_total_s", 0.0)), 1),
                "node": str(result.metrics.get(NODE) or ""),
                **result.config,
                "error": _error_line(result.error),
            }
        )
    return Trials(pd.DataFrame(rows), curves)


def _error_line(error: BaseException | None) -> str:
    """The root cause of a trial's failure in one line (Ray wraps it in its own errors)."""
    if error is None:
        return ""
    cause = error
    while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
        cause = getattr(cause, "cause", None) or cause.__cause__  # type: ignore[assignment]
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def write(trials: Trials, keys: list[str], out: Path, best_trial: str, tolerance: float) -> None:
    """Write the trial table (CSV, Markdown), the curves figure and the HTML report to `out`;
    `best_trial` is the fastest within `tolerance` of the top validation accuracy."""
    table = trials.table.sort_values("val_accuracy", ascending=False, na_position="last")
    table.to_csv(out / TRIALS_CSV, index=False)
    shown = _display(table, keys)
    rule = (
        f"The best trial is the fastest (seconds per epoch) of those within "
        f"{tolerance * 100:.2g} point of the top validation accuracy."
    )
    (out / TRIALS_MD).write_text(
        f"# Hyper-parameter search: best trial {best_trial}\n\n{rule}\n\n"
        + shown.to_markdown(index=False)
        + "\n"
    )
    _plot_curves(trials, best_trial, out / CURVES)
    best = table[table["trial"] == best_trial].iloc[0]
    summary = (
        f"<h1>Chosen trial: validation accuracy {best['val_accuracy']:.2%} "
        f"(top {table['val_accuracy'].max():.2%})</h1>"
        f"<p>Trial {best_trial} of {len(table)} "
        f"({int((table['status'] == 'failed').sum())} failed, "
        f"{int((table['status'] == 'stopped early').sum())} stopped early): "
        + ", ".join(f"{key}={format_value(best[key])}" for key in keys)
        + f"; {int(best['parameters']):,} parameters, {best['seconds']:.0f} s.</p><p>{rule}</p>"
    )
    (out / REPORT).write_text(
        html_page(
            "digitops tune",
            summary
            + figure_html("validation accuracy per epoch", out / CURVES)
            + table_html(list(shown.columns), shown.astype(str).values.tolist()),
        )
    )


def write_skipped(out: Path) -> None:
    """The report of a search that was not run (0 trials): training uses the configured values."""
    text = "The search was skipped (0 trials): training uses the configured hyper-parameters."
    (out / TRIALS_MD).write_text(f"# Hyper-parameter search\n\n{text}\n")
    (out / REPORT).write_text(html_page("digitops tune", f"<h1>No search</h1><p>{text}</p>"))


def _display(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    shown = table[
        [
            *("trial", "status", "baseline", "epochs", "val_accuracy", "parameters", "seconds"),
            *keys,
            "node",
            "error",
        ]
    ]
    return shown.assign(
        val_accuracy=shown["val_accuracy"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}"),
        node=shown["node"].map(lambda node: node[:8]),  # enough to tell a cluster's nodes apart
        baseline=shown["baseline"].map(lambda b: "yes" if b else ""),
        **{key: shown[key].map(format_value) for key in keys},
    )


def format_value(value: Any) -> str:
    """A searched value as reports show it (floats to 3 significant digits)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plot_curves(trials: Trials, best_trial: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    baseline = set(trials.table.loc[trials.table["baseline"], "trial"])
    for name, accuracy in trials.curves.items():
        if not accuracy:
            continue
        epochs = range(1, len(accuracy) + 1)
        if name == best_trial:
            ax.plot(epochs, accuracy, "o-", color="tab:red", lw=2.5, label=f"best ({name})")
        elif name in baseline:
            ax.plot(epochs, accuracy, "s--", color="black", lw=1.5, label="baseline (defaults)")
        else:
            ax.plot(epochs, accuracy, ".-", color="tab:blue", alpha=0.45)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{len(trials.curves)} trials (ASHA stops weak ones early)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
