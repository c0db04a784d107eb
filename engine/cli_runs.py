"""The commands that read stored runs: ``runs`` (the list, or one run with its messages), ``export``, ``tag``,
``tags`` and ``suspects`` — what the app's Compare, Export and Suspects pages offer, from a shell. Images are named
as the pages name them (their file names, else ``#index``), beside their index.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    from .analysis.filters import ImageFilter
    from .analysis.results import RunResults
    from .runs import RunRecord, RunStore


def run_json(record: RunRecord) -> dict[str, Any]:
    """A run as ``--json`` prints it: what it ran on, its status, sizes, scores, time and budget."""
    summary = record.summary
    return {
        "run_id": record.id, "method": record.method, "dataset": record.dataset, "preset": record.preset,
        "status": record.status, "error": record.error,
        "n_images": summary.get("n_images"), "n_skipped": summary.get("n_skipped"),
        "image_size": summary.get("image_size", record.options.get("image_size")),
        "subset": record.options.get("subset"),
        "acc": summary.get("acc"), "nmi": summary.get("nmi"), "ari": summary.get("ari"),
        "neighbor_purity": summary.get("neighbor_purity"),
        "seconds": summary.get("seconds", record.seconds), "device": summary.get("device", record.device),
        "processes": summary.get("processes", 1),
        "estimated_seconds": summary.get("estimated_seconds"), "budget": record.options.get("budget"),
    }


def run_outcome(record: RunRecord) -> str:
    """How a run ended, in one line: ``run ID: failed — why``."""
    return f"run {record.id}: {record.status}" + (f" — {record.error}" if record.error else "")


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows (the first a header) in columns aligned with two spaces between; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


def runs_command(store: RunStore, args: argparse.Namespace) -> int:
    """``runs``: every run, newest first, or with a run id that run, its config and its messages."""
    store.mark_orphans_interrupted()
    if args.run_id:
        _show_run(store, args.run_id, args.json)
    elif args.json:
        print(json.dumps([run_json(r) for r in store.list()]))
    else:
        _print_runs(store.list())
    return 0


def _print_runs(records: Sequence[RunRecord]) -> None:
    from .methods.estimate import format_seconds

    rows = [("RUN", "STATUS", "K", "ACC", "TIME", "DATASET")]
    for r in records:
        acc = r.summary.get("acc")
        rows.append((r.id, r.status, str(r.config.get("n_clusters", "–")), "–" if acc is None else f"{acc:.3f}",
                     format_seconds(r.summary.get("seconds", r.seconds)),
                     r.dataset + (f"  ({r.error})" if r.status == "failed" and r.error else "")))
    print_table(rows)


def _show_run(store: RunStore, run_id: str, as_json: bool) -> None:
    """The run (a finished labelled run's neighbour purity computed once, as the app does), its config and its
    messages in the order recorded."""
    from .analysis.results import run_neighbor_purity

    run_neighbor_purity(store, run_id)
    record = store.get(run_id)
    details = {**run_json(record), "config": record.config}
    messages = store.messages(run_id)
    if as_json:
        print(json.dumps({**details, "messages": messages}))
        return
    for key, value in details.items():
        if value is not None:
            print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    print("messages:")
    for message in messages:
        print(f"  [{message['stage']}] {message['message']}")


def audit_command(store: RunStore, args: argparse.Namespace) -> int:
    """``export``, ``tag``, ``tags`` and ``suspects`` of a finished run."""
    from .analysis.results import load_results

    results = load_results(store, args.run_id)
    if args.command == "export":
        _export(results, args)
    elif args.command == "tags":
        _tags(results, args.json)
    elif args.command == "tag":
        from .analysis.tags import tag_images, untag_images

        images = image_indices(results, args.images)
        changed = (untag_images if args.remove else tag_images)(results, images, args.tag)
        print(f"{'untagged' if args.remove else 'tagged'} {changed} image(s)")
    else:
        _suspects(results, args)
    return 0


def image_indices(results: RunResults, names: Sequence[str]) -> list[int]:
    """Images given by index or by name (as the pages and sheets name them, or the file's path in the dataset).

    Raises:
        UserError: a name no image has, or an index out of range.
    """
    by_name = {name: i for i, name in enumerate(results.image_names)}
    by_name.update({path: i for i, path in enumerate(results.images.paths)})
    indices = []
    for name in names:
        if name.lstrip("#").isdigit() and name.lstrip("#") not in by_name:
            index = int(name.lstrip("#"))
            if index >= len(results.assign):
                raise UserError(f"run {results.run_id} has images 0–{len(results.assign) - 1}; there is no {index}")
            indices.append(index)
        elif name in by_name:
            indices.append(by_name[name])
        else:
            raise UserError(f"no image of run {results.run_id} is named {name!r}: give an index, or a name as "
                            f"`suspects` or `tags` print it")
    return indices


def _tags(results: RunResults, as_json: bool) -> None:
    tagged = results.store.image_tags(results.run_id)
    if as_json:
        print(json.dumps({str(image): tags for image, tags in sorted(tagged.items())}))
    elif not tagged:
        print(f"no image of run {results.run_id} is tagged", file=sys.stderr)
    else:
        print_table([("IMAGE", "NAME", "TAGS")] + [(str(image), results.image_name(image), "; ".join(tags))
                                                   for image, tags in sorted(tagged.items())])


def _suspects(results: RunResults, args: argparse.Namespace) -> None:
    """The ranked suspects: each with its name, cluster, label, the run's confidence in it and why it is suspect;
    ``--json`` adds every score (higher = more suspect, :mod:`engine.analysis.suspects`)."""
    from .analysis.suspects import COMBINED, run_suspects

    suspects = run_suspects(results)
    if args.by == "label" and results.labels is None:
        raise UserError(f"run {results.run_id}'s images have no labels, so there is no label score; choose from "
                        f"{COMBINED}, {', '.join(suspects.scores)}")
    if args.by != COMBINED and args.by not in suspects.scores:
        raise UserError(f"unknown score {args.by!r}; choose from {COMBINED}, {', '.join(suspects.scores)}")
    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    rows = []
    for i in map(int, suspects.ranking(args.by)[:args.top]):
        label = None if results.labels is None else results.class_name(int(results.labels[i]))
        rows.append({"image": i, "name": results.image_name(i), "cluster": int(results.assign[i]), "label": label,
                     "confidence": round(float(results.confidence[i]), 4),
                     "scores": {name: round(float(values[i]), 4) for name, values in suspects.scores.items()},
                     "reasons": suspects.reasons(i)})
    if args.json:
        print(json.dumps(rows))
        return
    labelled = results.labels is not None
    header = ("IMAGE", "NAME", "CLUSTER") + (("LABEL",) if labelled else ()) + ("CONFIDENCE", "WHY")
    print_table([header] + [(str(row["image"]), row["name"], str(row["cluster"]))
                            + ((row["label"],) if labelled else ())
                            + (f"{row['confidence']:.3f}", ", ".join(row["reasons"]) or "-") for row in rows])


def _export(results: RunResults, args: argparse.Namespace) -> None:
    from .analysis.export import FORMATS, export_run

    only = _export_filter(results, args)
    if only.active and not only.mask(results, results.store.image_tags(results.run_id)).any():
        print(f"warning: the filter ({only.describe(results.class_name)}) keeps none of the run's "
              f"{len(results.assign)} images: the files hold no image", file=sys.stderr)
    written = export_run(results, args.out, args.format or FORMATS, args.per_cluster, image_filter=only,
                         least_confident_first=args.least_confident_first)
    for path in (path for paths in written.values() for path in paths):
        print(path)


def _export_filter(results: RunResults, args: argparse.Namespace) -> ImageFilter:
    """The ``export`` options' filter, checked against the run: its clusters exist, a label part has labels."""
    from .analysis.filters import ImageFilter, confidence_range

    unknown = sorted(set(args.cluster) - set(range(results.n_clusters)))
    if unknown:
        raise UserError(f"run {results.run_id} has clusters 0–{results.n_clusters - 1}; there is no cluster "
                        f"{', '.join(map(str, unknown))}")
    if args.correctness and results.labels is None:
        raise UserError(f"--correctness needs labels, and run {results.run_id}'s images have none")
    try:
        confidence = confidence_range(args.confidence) if args.confidence else (0.0, 1.0)
    except ValueError as exc:
        raise UserError(f"--confidence: {exc}") from None
    if args.per_cluster < 1:
        raise UserError(f"--per-cluster must be at least 1, got {args.per_cluster}")
    return ImageFilter(clusters=tuple(args.cluster), confidence=confidence,
                       correctness=args.correctness or "all", tags=tuple(args.tag))
