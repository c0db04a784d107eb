"""Every run of a store as one table of display rows: scores as text with three decimals, "n/a" where a run has
no such score and a note saying why, so a table never shows a bare None or NaN."""
from __future__ import annotations

from pathlib import Path

from ..data.roots import default_upload_dir
from ..methods import get_method, list_methods
from ..methods.estimate import format_seconds  # noqa: F401 — the pages' duration format
from ..runs import RunRecord, RunStore
from ..runs.uploads import dataset_label
from ..wording import count
from .results import run_neighbor_purity

NOT_AVAILABLE = "n/a"
SCORES = {"ACC": "acc", "NMI": "nmi", "ARI": "ari"}


def format_score(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.3f}"


def _why_no_scores(record: RunRecord) -> str:
    if record.status == "failed":
        return f"failed: {record.error or 'no reason recorded'}"
    if record.status in ("cancelled", "interrupted"):
        return f"{record.status}: scores come if it is resumed and finishes"
    if record.status != "finished":
        return f"{record.status}: scores come when it finishes"
    if record.summary.get("acc") is None:
        return "no labels: the dataset has no classes to score against"
    return ""


def run_title(record: RunRecord, upload_dir: Path) -> str:
    """One line naming a run in pickers: "<id> · kmeans on upload: shapes.zip · ACC 0.790"."""
    acc = record.summary.get("acc")
    score = f" · ACC {acc:.3f}" if acc is not None else ""
    return f"{record.id} · {record.method} on {dataset_label(record.dataset, upload_dir)}{score}"


def overview_rows(store: RunStore, upload_dir: Path | None = None) -> list[dict[str, str]]:
    """One row per run, newest first: run, method, dataset (an upload by its file name), preset, K, seed, ACC,
    NMI, ARI, purity@k, time, device, status and a note on any "n/a". ``upload_dir`` defaults to the store's
    (:func:`~engine.data.roots.default_upload_dir`). A finished run lacking its neighbour purity gets it computed
    and stored once (:func:`run_neighbor_purity`)."""
    upload_dir = default_upload_dir(store.root) if upload_dir is None else upload_dir
    rows = []
    for record in store.list():
        purity, purity_note = run_neighbor_purity(store, record.id)
        row = {"run": record.id, "method": record.method, "dataset": dataset_label(record.dataset, upload_dir),
               "preset": record.preset or "–",
               "K": str(record.config.get("n_clusters", "–")), "seed": str(record.config.get("seed", "–"))}
        scores = {**{title: format_score(record.summary.get(key)) for title, key in SCORES.items()},
                  "purity@k": format_score(purity)}
        # a run not finished: its score columns say why it has none, in a word
        row.update(scores if record.status == "finished" else dict.fromkeys(scores, record.status))
        row["time"] = format_seconds(record.summary.get("seconds", record.seconds))
        row["device"] = record.summary.get("device", record.device) or "–"
        row["status"] = record.status
        row["note"] = _why_no_scores(record) or purity_note
        rows.append(row)
    return rows


def quick_start_hint(store: RunStore) -> str:
    """How long the quickest run, K-means on digits, takes: the wait of the last one this store finished (queued
    to finished, what a person waits), or a bound that holds on a busy CPU when none has run yet. The first run of
    a server also loads the libraries, which is why it is never promised as "a second"."""
    done = [r for r in store.list("finished") if r.method == "kmeans" and r.dataset == "digits" and r.finished]
    if done:
        return f"digits + kmeans took {format_seconds(done[0].finished - done[0].created)} here last time"
    return "digits + kmeans usually finishes within half a minute on a CPU; the server's first run takes longest"


CPU_WARNING_SECONDS = 30 * 60  # above this on a CPU, the Train page points to faster ways


def estimate_advice(estimate: dict, method: str) -> tuple[str, str | None]:
    """What the Train page says about an estimate (``FitEstimate.to_json()``) of a ``method`` run: one line with
    the whole run and each stage, and a warning when a CPU run would take over half an hour, naming what is
    faster — a frozen pretrained backbone's features (``pretext_from=pretrained:NAME``), or a GPU."""
    stages = " · ".join(f"{name} {format_seconds(seconds)}" for name, seconds in estimate["per_stage"].items())
    unmeasured = f" · not measured: {', '.join(estimate['unmeasured'])}" if estimate.get("unmeasured") else ""
    line = (f"Estimated time: **{format_seconds(estimate['estimated_seconds'])}** on {estimate['device']} "
            f"({stages}{unmeasured}), from a few timed steps of each stage")
    if estimate["device"] != "cpu" or estimate["estimated_seconds"] <= CPU_WARNING_SECONDS:
        return line, None
    pretrained = [name for name in list_methods() if "pretrained_weights" in vars(get_method(name).Config())]
    if method in pretrained:
        faster = ("cluster a frozen pretrained backbone's features instead (choose one under \"Frozen pretrained "
                  "features\"; on the command line `--set pretext_from=pretrained:NAME`), which takes minutes, or "
                  "train on a GPU")
    else:
        faster = (f"train on a GPU, or use a method that clusters a frozen pretrained backbone's features "
                  f"({', '.join(pretrained)} with `pretext_from=pretrained:NAME`), which takes minutes")
    return line, (f"This run would take about {format_seconds(estimate['estimated_seconds'])} on this CPU. To get "
                  f"results sooner, {faster}.")


def expected_seconds(record: RunRecord) -> float | None:
    """How long a run still takes: a running run's ETA, a queued run's estimate when it was made before Start; None
    when not known."""
    if record.status == "running":
        return record.eta_s
    estimate = record.options.get("estimate") or {}
    return estimate.get("seconds")


def queue_note(ahead: list[RunRecord], one_worker: bool) -> str:
    """What a queued run waits for: the runs ahead of it in this server's queue, and, with one worker and every
    one of their times known, about when it starts."""
    if not ahead:
        return "queued · starts as soon as a worker is free"
    waits = [expected_seconds(record) for record in ahead]
    when = (f" · starts in about {format_seconds(sum(waits))}" if one_worker and None not in waits else "")
    return f"queued behind {count(len(ahead), 'run')} ({', '.join(record.id for record in ahead)}){when}"
