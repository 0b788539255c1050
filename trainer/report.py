"""The PNG report (ROC curve, confusion matrix, training curves) and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from trainer.metrics import Evaluation

INTENDED_USE = (
    "Triage aid for adult and paediatric frontal chest radiographs: flags images whose "
    "probability of the positive class reaches the threshold for priority reading. Not a "
    "diagnosis; every image is still read by a clinician."
)
LIMITATIONS = (
    "Trained on one site's paediatric films (Kermany et al. 2018) unless retrained on local "
    "data; sensitivity and specificity at another site differ from those reported here "
    "(models trained on these films fell to AUC 0.54 on other hospitals' paediatric films, "
    "Xin et al. 2021; the shifted copy of val is a stand-in for another site, not a "
    "measurement of one). Check with `cxr-screen evaluate` on local labelled images before "
    "relying on it."
)


def write_report(
    path: Path,
    *,
    evaluation: Evaluation,
    history: dict[str, list[float]] | None = None,
    title: str = "",
    shifted: Evaluation | None = None,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Draw the ROC curves (the folder and, when given, its shifted copy), the confusion
    matrix, the reliability curves (when a calibration is given) and the training curves
    to a PNG."""
    drawers: list[Any] = [
        lambda ax: _roc(ax, evaluation, shifted),
        lambda ax: _confusion(ax, evaluation),
    ]
    if calibration and any(calibration.get(stage) for stage in STAGES):
        drawers.append(lambda ax: _reliability(ax, calibration))
    if history:
        drawers.append(lambda ax: _curves(ax, history))
    figure = Figure(figsize=(5.2 * len(drawers), 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    for ax, draw in zip(figure.subplots(1, len(drawers)), drawers, strict=True):
        draw(ax)
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _roc(ax: Any, evaluation: Evaluation, shifted: Evaluation | None = None) -> None:
    if evaluation.roc:
        ax.plot(evaluation.roc["fpr"], evaluation.roc["tpr"], lw=2, label="ROC")
    if shifted is not None and shifted.roc:
        auc = "n/a" if shifted.auc is None else f"{shifted.auc:.4f}"
        ax.plot(shifted.roc["fpr"], shifted.roc["tpr"], lw=1.5, color="darkorange",
                label=f"shifted copy, AUC {auc}")  # fmt: skip
        if shifted.sensitivity is not None and shifted.specificity is not None:
            ax.plot([1 - shifted.specificity], [shifted.sensitivity], "s", color="darkorange",
                    label="shifted copy at the threshold")  # fmt: skip
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    if evaluation.sensitivity is not None and evaluation.specificity is not None:
        ax.plot(
            [1 - evaluation.specificity],
            [evaluation.sensitivity],
            "o",
            color="crimson",
            label=f"threshold {evaluation.threshold:.3f}",
        )
    auc = "n/a" if evaluation.auc is None else f"{evaluation.auc:.4f}"
    ax.set_title(f"ROC ({evaluation.positive_class}), AUC {auc}")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")


# Reliability curves: a run's before and after its temperature, or a served model's.
STAGES = {"before": "grey", "after": "crimson", "served": "crimson"}


def _reliability(ax: Any, calibration: dict[str, Any]) -> None:
    """Observed rate against mean probability per bin, before and after the temperature."""
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="calibrated")
    styles = {"evaluation": ("-", "o"), "shifted": (":", "s")}
    for stage, color in STAGES.items():
        for folder, figures in (calibration.get(stage) or {}).items():
            bins = [b for b in figures["bins"] if b["n"]]
            line, marker = styles.get(folder, ("-", "o"))
            ece = figures.get("ece")
            ax.plot(
                [b["mean_probability"] for b in bins],
                [b["observed_rate"] for b in bins],
                ls=line, marker=marker, ms=4, color=color,
                label=f"{folder} {stage}: ECE {ece:.3f}" if ece is not None else folder,
            )  # fmt: skip
    temperature = calibration.get("temperature")
    ax.set_title(
        "reliability" + (f", temperature {temperature:.3f}" if temperature is not None else "")
    )
    ax.set_xlabel("mean p(positive) in bin")
    ax.set_ylabel("share positive")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="upper left", fontsize="small")


def _confusion(ax: Any, evaluation: Evaluation) -> None:
    matrix = evaluation.confusion
    n = len(evaluation.classes)
    ax.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            value = matrix[i][j]
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > peak / 2 else "black")  # fmt: skip
    ax.set_xticks(range(n), evaluation.classes)
    ax.set_yticks(range(n), evaluation.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    sens = "n/a" if evaluation.sensitivity is None else f"{evaluation.sensitivity:.3f}"
    spec = "n/a" if evaluation.specificity is None else f"{evaluation.specificity:.3f}"
    ax.set_title(f"accuracy {evaluation.accuracy:.3f}, sens {sens}, spec {spec}")


def _curves(ax: Any, history: dict[str, list[float]]) -> None:
    for name in ("loss", "val_loss"):
        if name in history:
            ax.plot(range(1, len(history[name]) + 1), history[name], label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    twin = ax.twinx()
    for name in ("accuracy", "val_accuracy"):
        if name in history:
            twin.plot(range(1, len(history[name]) + 1), history[name], ls=":", label=name)
    twin.set_ylabel("accuracy")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    ax.set_title("training curves")
