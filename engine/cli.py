"""``python -m engine``: list methods and datasets, train, resume and list runs — the same engine the app drives.

Exit codes: 0 success; 1 the run failed or was cancelled; 2 a user error (bad dataset, method, K, …), printed as one
``error:`` line on stderr without a traceback; 128 + the signal's number when SIGINT (Ctrl-C) or SIGTERM stopped a
``train`` or ``resume`` (the run is recorded cancelled, or interrupted after a second signal, and resumes).

``torchrun --nproc-per-node N -m engine train|resume …`` trains one run with N processes (one per GPU, or N CPU
processes): rank 0 records the run and prints what a one-process command prints; see
:mod:`engine.methods.distributed`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator, NoReturn, Sequence

from .cli_runs import audit_command, run_json, run_outcome, runs_command
from .errors import RunCancelled, TrainingError, UserError


def _parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, true/false, null), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` → [0, 1, 2]; argparse turns the ValueError into a usage error."""
    seeds = [int(part) for part in text.split(",") if part.strip()]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(text)
    return seeds


class _Parser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad command line as every other user error is: one ``error:`` line (with
    where to read the usage) and exit code 2, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m engine", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="registered methods and datasets")
    listing.add_argument("--json", action="store_true")

    train = commands.add_parser("train", help="train one method on one dataset")
    train.add_argument("--method", required=True)
    train.add_argument("--dataset", default="digits", help="NAME, NAME:train, NAME:test or folder:PATH")
    train.add_argument("--preset", default="fast",
                       help="fast (short schedules: seconds to about 3 minutes on digits on a CPU) or paper (the "
                            "paper's schedule, for a GPU)")
    train.add_argument("--clusters", type=int, help="K, the number of clusters (default: the preset's)")
    train.add_argument("--epochs", type=int, help="epochs of every training stage")
    train.add_argument("--seed", type=int)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any method setting, e.g. --set entropy_weight=3 (repeatable)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    train.add_argument("--image-size", type=int, metavar="N",
                       help="decode the images at N×N pixels (shorter side to N, centre crop; cached once per "
                            "size). Default: a named dataset's own size, 64 for a folder (its own if smaller)")
    train.add_argument("--data-root", help="folder holding the dataset's files (no download needed)")
    train.add_argument("--subset", type=int, metavar="N",
                       help="train on N of the images: every class equally, chosen with a fixed seed")
    train.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    train.add_argument("--weights", metavar="PATH",
                       help="state dict file for the backbone of --set pretext_from=pretrained:NAME")
    train.add_argument("--download-weights", action="store_true",
                       help="let torchvision/timm/open_clip download the pretrained backbone's weights (internet)")
    train.add_argument("--runs-dir", help="run store folder (default $DCE_RUNS_DIR or ./runs)")
    train.add_argument("--queue", action="store_true",
                       help="queue the run for `worker` processes and return at once (prints the run id)")
    train.add_argument("--json", action="store_true", help="end with one JSON line describing the run")
    train.add_argument("--estimate", action="store_true",
                       help="time a few steps of every stage and print how long the run would take, then exit: "
                            "nothing is trained or stored (with --json: estimated_seconds and per_stage)")
    train.add_argument("--budget-minutes", type=float, metavar="M",
                       help="scale every stage's epochs by one factor so that the run's estimate fits into M "
                            "minutes; the run records the factor and the settings it changed")

    resume = commands.add_parser("resume", help="continue an interrupted, cancelled or failed run")
    resume.add_argument("run_id")
    resume.add_argument("--runs-dir")
    resume.add_argument("--queue", action="store_true", help="queue it for `worker` processes instead")
    resume.add_argument("--json", action="store_true")

    worker = commands.add_parser("worker", help="run the runs queued with --queue, one at a time, on one device")
    worker.add_argument("--device", default="cpu",
                        help="cpu or cuda:N: the worker takes the runs that ask for it, those asking for auto (on "
                             "the CPU: when there is no GPU, or light ones such as kmeans) and, on a GPU, cuda")
    worker.add_argument("--until-idle", action="store_true",
                        help="exit (0) once no queued run is left for it, instead of waiting for more until SIGINT "
                             "or SIGTERM")
    worker.add_argument("--runs-dir")

    cancel = commands.add_parser("cancel", help="stop a queued or running run, whichever process runs it (a "
                                                "worker, a server): it is recorded cancelled and can be resumed")
    cancel.add_argument("run_id")
    cancel.add_argument("--runs-dir")

    runs = commands.add_parser("runs", help="list stored runs, or show one with its messages")
    runs.add_argument("run_id", nargs="?", help="show this run: its settings, scores and messages (skipped files, "
                                                "a stage starting over, its error)")
    runs.add_argument("--runs-dir")
    runs.add_argument("--json", action="store_true", help="print JSON: a list of runs, or the one run with its "
                                                          "config and messages")

    export = commands.add_parser("export", help="write a finished run's cluster sheets, gallery and assignments")
    export.add_argument("run_id")
    export.add_argument("--out", required=True, help="folder to write the files to (created if missing)")
    export.add_argument("--format", help="comma-separated subset of png,html,csv,zip (default: all)")
    export.add_argument("--tag", action="append", default=[],
                        help="only images with this tag (repeatable: any of them)")
    export.add_argument("--cluster", action="append", default=[], type=int,
                        help="only images of this cluster (repeatable: any of them)")
    export.add_argument("--correctness", choices=("correct", "incorrect"),
                        help="only images whose label is (incorrect: is not) the class their cluster is matched to "
                             "(labelled runs)")
    export.add_argument("--confidence", metavar="LOW-HIGH",
                        help="only images whose cluster probability lies in this range, e.g. 0-0.6")
    export.add_argument("--per-cluster", type=int, default=100, metavar="N",
                        help="images per cluster on the PNG sheets and in the HTML gallery (default 100; the CSV "
                             "lists every image)")
    export.add_argument("--least-confident-first", action="store_true",
                        help="sheets and gallery start with each cluster's least confident images, where its "
                             "mistakes gather (default: most confident first)")
    export.add_argument("--runs-dir")

    tag = commands.add_parser("tag", help="tag images of a finished run (e.g. mislabelled, duplicate, "
                                          "'label: 7' for a corrected label)")
    tag.add_argument("run_id")
    tag.add_argument("tag")
    tag.add_argument("images", nargs="+", help="image indices, or names as suspects and tags print them (a file's "
                                               "name, with the folders that tell it apart)")
    tag.add_argument("--remove", action="store_true", help="take the tag off instead")
    tag.add_argument("--runs-dir")

    tags = commands.add_parser("tags", help="the tagged images of a run")
    tags.add_argument("run_id")
    tags.add_argument("--runs-dir")
    tags.add_argument("--json", action="store_true", help="one JSON object: image index → its tags")

    suspects = commands.add_parser("suspects", help="a finished run's images most likely to be mistakes, ranked")
    suspects.add_argument("run_id")
    suspects.add_argument("--top", type=int, default=20, help="how many to list (default 20)")
    suspects.add_argument("--by", default="combined",
                          help="combined, neighbours, confidence, outlier, centre or (with labels) label")
    suspects.add_argument("--runs-dir")
    suspects.add_argument("--json", action="store_true",
                          help="one JSON list: image, name, cluster, label, confidence (the run's probability of "
                               "its cluster), every score (higher = more suspect) and the reasons")
    bench = commands.add_parser("bench", help="speed and quality benchmarks → results.json + RESULTS.md")
    bench.add_argument("--methods",
                       help="comma-separated methods to train or, with --micro, to time a step of (all: every one; "
                            "default scan, with --smoke all)")
    bench.add_argument("--dataset", default="digits")
    bench.add_argument("--preset", default="paper")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--data-root")
    bench.add_argument("--subset", type=int, metavar="N",
                       help="train each method on N of the dataset's images, class-balanced and seeded (the "
                            "same N for every method of the run, K-means included)")
    bench.add_argument("--budget-minutes", type=float, default=10.0, help="stop each run after this long")
    bench.add_argument("--seeds", type=_seed_list, default=[0], metavar="S,S,…",
                       help="train each method once per seed (e.g. 0,1,2); the results add a mean per method")
    bench.add_argument("--scale-to-budget", action="store_true",
                       help="scale each run's epochs so that its estimate fits --budget-minutes (as train "
                            "--budget-minutes does) instead of stopping it there")
    bench.add_argument("--micro", action="store_true",
                       help="time the augmentation, one SimCLR step, and one step of each stage of --methods")
    bench.add_argument("--batch-size", type=int, default=512, help="batch of --micro's SimCLR step")
    bench.add_argument("--compile", action="store_true",
                       help="--micro: also time the step torch.compile'd with inductor, on a GPU or the CPU "
                            "(its rows say compile[BACKEND])")
    bench.add_argument("--compile-backend",
                       help="torch.compile backend of --compile and --smoke (default inductor; --smoke on the CPU: "
                            "aot_eager, which traces without generating code)")
    bench.add_argument("--compile-mode", choices=("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                       help="--micro --compile: inductor's mode for the SimCLR step (reduce-overhead: CUDA graphs)")
    bench.add_argument("--smoke", action="store_true",
                       help="one short epoch of every stage of --methods on 192 digits, compiled: fails unless the "
                            "losses stay finite, every trained stage compiles and no step syncs the host "
                            "→ --out/smoke-DEVICE/")
    bench.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="--smoke: check N methods at a time, each in a process of its own compiling on one "
                            "thread (a GPU machine with 16 cores: 8 or more)")
    bench.add_argument("--map", type=int, metavar="N", help="time the Map page re-render for N points")
    bench.add_argument("--pages", action="store_true",
                       help="time each page of the app in headless Chromium: digits, then CIFAR-10 from --data-root "
                            "with generated features (60k points)")
    bench.add_argument("--kmeans", type=int, metavar="N",
                       help="time K-means on the pixels of N images of --dataset: ours against scikit-learn's")
    bench.add_argument("--knn", type=int, metavar="N",
                       help="time exact and approximate k-NN mining of N synthetic features; approximate recall@20")
    bench.add_argument("--decode", type=int, metavar="N",
                       help="peak RAM and time of decoding N synthetic 512 px JPEGs at --image-size into the cache")
    bench.add_argument("--image-size", type=int, default=64, metavar="N", help="the side --decode decodes at")
    bench.add_argument("--extract", action="store_true",
                       help="images/s of every pretrained backbone at its input size (random weights)")
    bench.add_argument("--pretrained", type=int, metavar="N",
                       help="end to end on N images of --dataset: load, extract --backbone's features, fit "
                            "--methods (default kmeans,temi) on them")
    bench.add_argument("--backbone", default="dinov2-vits14", help="the backbone of --pretrained")
    bench.add_argument("--collect", action="store_true",
                       help="gather every --out/*/results.json into --out/results.json and --out/RESULTS.md")
    bench.add_argument("--runs-dir", default="bench-runs")
    bench.add_argument("--out", default="benchmarks")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from .methods import get_method

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value)
    if args.weights is not None:
        from pathlib import Path

        overrides["pretrained_weights"] = str(Path(args.weights).expanduser().resolve())
    if args.download_weights:
        overrides["download_weights"] = True
    if args.clusters is not None:
        overrides["n_clusters"] = args.clusters
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.epochs is not None:
        if args.epochs < 0:
            raise UserError(f"--epochs must be at least 0, got {args.epochs}")
        config = get_method(args.method).Config()
        # a warm-up is a part of a stage, not a stage: it keeps its own length
        overrides.update({name: args.epochs for name in vars(config)
                          if name.endswith("epochs") and not name.startswith("warmup")})
    return overrides


class _ProgressPrinter:
    """Prints to stderr, while a foreground run trains, its stage changes, losses and the messages it records (the
    files its load skipped and why, a stage starting over, the estimate …): those recorded since it was made."""

    def __init__(self, store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.printed = len(store.messages(run_id))

    def __call__(self, event) -> None:
        if event.kind != "step":
            self.print_messages()  # a message is recorded before its event reaches an observer
        if event.kind == "stage":
            print(f"[{event.stage}] {event.total} steps", file=sys.stderr, flush=True)
        elif event.kind == "step" and event.losses:
            losses = " ".join(f"{k}={v:.4f}" for k, v in event.losses.items())
            print(f"[{event.stage}] step {event.step}/{event.total} {losses}", file=sys.stderr, flush=True)

    def print_messages(self) -> None:
        messages = self.store.messages(self.run_id)[self.printed:]
        self.printed += len(messages)
        for message in messages:
            if message["stage"] != "run":  # "started", "finished …": the command's own lines say so
                print(f"[{message['stage']}] {message['message']}", file=sys.stderr, flush=True)


@contextmanager
def _signals_cancel(cancel: threading.Event) -> Iterator[list[int]]:
    """While a run trains in the foreground, SIGINT (Ctrl-C) and SIGTERM set ``cancel``: the run stops at its next
    step and is recorded cancelled. A second signal raises KeyboardInterrupt at once. Yields the signals received."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_in_foreground(store, run_id: str, as_json: bool, parallel=None) -> int:
    from .runs import execute_run
    from .runs.owner import Owner

    code = 0
    cancel = threading.Event()
    resume_hint = f"`python -m engine resume {run_id}` continues it"
    printer = _ProgressPrinter(store, run_id)
    with _signals_cancel(cancel) as received:
        try:
            execute_run(store, run_id, cancel, observer=printer,
                        device=None if parallel is None else parallel.device, parallel=parallel)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
        except RunCancelled as exc:
            if received:
                name = signal.Signals(received[0]).name
                print(f"error: run {run_id} stopped by {name} and recorded cancelled; {resume_hint}",
                      file=sys.stderr)
                code = 128 + received[0]
            else:
                print(f"error: {exc}; {resume_hint}", file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            store.interrupt(run_id, Owner.current(), f"stopped by a second signal; {resume_hint}")
            print(f"error: run {run_id} stopped at once by a second signal and recorded interrupted; {resume_hint}",
                  file=sys.stderr)
            code = 128 + received[-1]
        except TrainingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 1
        except Exception as exc:  # noqa: BLE001 — recorded in the run's error.log by execute_run
            print(f"error: {store.get(run_id).error or exc}", file=sys.stderr)
            code = 1
    printer.print_messages()
    if store.get(run_id).status == "finished":
        from .analysis.results import run_neighbor_purity

        run_neighbor_purity(store, run_id)  # what the app shows beside the scores, for a method that mines none too
    record = store.get(run_id)
    if as_json:
        print(json.dumps(run_json(record)))
    else:
        print(run_outcome(record))
        for key, name in (("acc", "ACC"), ("nmi", "NMI"), ("ari", "ARI"), ("neighbor_purity", "neighbour purity")):
            if record.summary.get(key) is not None:
                print(f"  {name} {record.summary[key]:.4f}")
    return code


def _work(store, device: str, until_idle: bool) -> int:
    """``worker``: serve the runs queued for workers until SIGINT or SIGTERM, which cancels the run in progress
    (recorded cancelled) and ends the worker with 128 + the signal's number, or with ``until_idle`` until none is
    left. Says which run it starts, and how each ended, on stderr."""
    from .runs.jobs import serve, worker_devices

    def ended(run_id: str) -> None:
        record = store.get(run_id)
        acc = record.summary.get("acc")
        print(run_outcome(record) + (f" · ACC {acc:.3f}" if acc is not None else ""), file=sys.stderr, flush=True)

    worker_devices(device, source="--device")  # checks the name
    stop = threading.Event()
    with _signals_cancel(stop) as received:
        print(f"worker on {device} serving {store.root}", file=sys.stderr, flush=True)
        serve(store, device, stop, on_start=lambda run_id: print(f"run {run_id}: started", file=sys.stderr,
                                                                 flush=True),
              on_end=ended, until_idle=until_idle)
    return 128 + received[0] if received else 0


def _run_distributed(args: argparse.Namespace, store) -> int:
    """``train`` or ``resume`` in one of the processes ``torchrun`` started: rank 0 queues the run (or requeues it)
    and runs it in the foreground, recording it; the others train beside it and print nothing (rank 0 reports
    the errors they share). Exit codes as for one process."""
    from .methods.distributed import DataParallel
    from .runs import RunRequest, create_run
    from .runs.execute import execute_replica

    if args.command == "resume":
        device = store.get(args.run_id).options.get("device", "auto")
    else:
        request = RunRequest(args.method, args.dataset, args.preset, _overrides(args), args.device,
                             args.data_root, args.download, image_size=args.image_size, subset=args.subset)
        request.build_method()  # a bad request fails here, in every process, before any waits for the others
        device = args.device
    parallel = DataParallel.start(device)
    try:
        run_id = None
        if parallel.is_writer:
            try:
                if args.command == "resume":
                    store.requeue(args.run_id)
                    run_id = args.run_id
                else:
                    run_id = create_run(store, request)
            except UserError as exc:
                print(f"error: {exc}", file=sys.stderr)
        run_id = parallel.broadcast(run_id)
        if run_id is None:
            return 2
        if parallel.is_writer:
            return _run_in_foreground(store, run_id, args.json, parallel)
        cancel = threading.Event()
        with _signals_cancel(cancel) as received:
            try:
                execute_replica(store, run_id, parallel, cancel)
            except UserError:
                return 2
            except RunCancelled:
                return 128 + received[0] if received else 1
            except TrainingError:
                return 1
        return 0
    finally:
        parallel.close()


def _request(args: argparse.Namespace):
    from .runs import RunRequest

    return RunRequest(args.method, args.dataset, args.preset, _overrides(args), args.device, args.data_root,
                      args.download, image_size=args.image_size, subset=args.subset)


def _runs_folder(args: argparse.Namespace):
    """The runs folder ``--runs-dir`` names, else the default (``$DCE_RUNS_DIR`` or ``./runs``)."""
    from pathlib import Path

    from .runs import default_runs_dir

    return Path(args.runs_dir) if args.runs_dir else default_runs_dir()


def _timed_request(args: argparse.Namespace):
    """The train request with its estimate (and, with --budget-minutes, scaled to the budget), without touching
    the run store: the runs folder is only read, for a pretext another run left."""
    from .data.registry import check_dataset_spec
    from .runs.budget import budget_message, estimate_request, fit_to_budget

    request = _request(args)
    request.build_method()  # a bad method or setting, and a bad dataset, are refused before the line below
    check_dataset_spec(request.dataset, data_root=request.data_root, download=request.download)
    runs_root = _runs_folder(args)
    print(f"estimating: a few timed steps of every stage of {request.method} on {request.dataset} …",
          file=sys.stderr, flush=True)
    estimate = estimate_request(request, runs_root=runs_root)
    if args.budget_minutes is None:
        return dataclasses.replace(request, estimate=estimate.to_json())
    request = fit_to_budget(request, args.budget_minutes, estimate)
    print(budget_message(request.budget), file=sys.stderr, flush=True)
    return request


def _print_estimate(request, as_json: bool) -> None:
    from .methods.estimate import format_seconds

    estimate = request.estimate
    if as_json:
        print(json.dumps({**estimate, **({"budget": request.budget} if request.budget else {})}))
        return
    print(f"estimated {format_seconds(estimate['estimated_seconds'])} on {estimate['device']} "
          f"(measured in {format_seconds(estimate['estimate_seconds'])})")
    for stage, seconds in estimate["per_stage"].items():
        print(f"  {stage:<10} {format_seconds(seconds):>14}  {estimate['steps'][stage]} steps")
    if estimate["unmeasured"]:
        print(f"  not measured: {', '.join(estimate['unmeasured'])}")


def _list(as_json: bool) -> None:
    from .data import describe_datasets
    from .methods import get_method, list_methods

    from .nn.pretrained import list_pretrained

    methods = [get_method(name).describe() for name in list_methods()]
    datasets = describe_datasets()
    pretrained = list_pretrained()
    if as_json:
        print(json.dumps({"methods": methods, "datasets": datasets, "pretrained": pretrained}))
        return
    print("methods (stages; presets):")
    for m in methods:
        print(f"  {m['name']:<8} {m['summary']}\n           stages: {', '.join(s['name'] for s in m['stages'])}; "
              f"presets: {', '.join(m['presets'])}")
    print("datasets:")
    for d in datasets:
        print(f"  {d['name']:<14} {d.get('description', '')}")
    print("pretrained backbones (--set pretext_from=pretrained:NAME):")
    for b in pretrained:
        print(f"  {b['name']:<18} {b['input_size']} px → {b['feature_dim']}-d  {b['description']}")


def _bench(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from . import bench
    from .methods import pick_device

    from .data import load_dataset
    from .methods import get_method, list_methods
    from .methods.speedups import Speedups

    if args.collect:
        rows = bench.collect_results(Path(args.out))
        for path in bench.write_results(rows, Path(args.out)):
            print(path)
        return 0
    device = pick_device(args.device)
    methods_arg = args.methods or ("all" if args.smoke else "kmeans,temi" if args.pretrained else "scan")
    methods = list_methods() if methods_arg == "all" else methods_arg.split(",")
    for method in methods:
        get_method(method)  # an unknown name fails here, before anything is timed
    if args.smoke:
        if args.jobs > 1 and len(methods) > 1:
            rows, failures = bench.smoke_in_processes(device, methods, args.jobs, args.compile_backend)
        else:
            rows, failures = bench.smoke(device, methods, compile_backend=args.compile_backend)
        for path in bench.write_results(rows, Path(args.out) / f"smoke-{device.type}"):
            print(path)
        for failure in failures:
            print(f"smoke: {failure}", file=sys.stderr)
        return 1 if failures else 0
    if args.micro:
        backend = args.compile_backend or "inductor"
        if args.compile:
            print(f"--compile: the steps are compiled with torch.compile, backend {backend}, on "
                  f"{bench.device_name(device)}")
        if args.compile_mode and not (args.compile and backend == "inductor"):
            raise UserError("--compile-mode is inductor's: it needs --compile and the inductor backend")
        rows = bench.micro(device, args.batch_size, compile=args.compile, compile_backend=backend,
                           compile_mode=args.compile_mode)
        bench.write_results(rows, Path(args.out))  # what is measured so far survives a timeout of what follows
        images = load_dataset(args.dataset, data_root=args.data_root)
        speedups = dataclasses.replace(Speedups.for_device(device, compile=args.compile), compile_backend=backend)
        for method in methods:
            rows += bench.method_step_times(method, images, device, args.preset, speedups)
            bench.write_results(rows, Path(args.out))
    elif args.extract or args.pretrained:
        from . import bench_features

        rows = bench_features.extraction_rows(device=device) if args.extract else bench_features.end_to_end_rows(
            args.dataset, args.data_root, args.pretrained, args.backbone, methods, device)
    elif args.map:
        rows = [bench.map_rerender(args.map)]
    elif args.pages:
        from .bench_pages import page_rows

        rows = page_rows(args.data_root)
    elif args.decode:
        rows = bench.decode_rows(args.decode, args.image_size)
    elif args.knn:
        rows = bench.knn_rows(args.knn)
    elif args.kmeans:
        rows = bench.kmeans_rows(load_dataset(args.dataset, data_root=args.data_root), args.kmeans)
    else:
        def with_summary(rows: list[dict]) -> list[dict]:
            return rows + bench.seed_summary(rows) if len(args.seeds) > 1 else rows

        rows = with_summary(bench.train_rows(
            methods, args.dataset, args.preset, args.device, args.budget_minutes, args.data_root,
            Path(args.runs_dir), subset=args.subset, scale_to_budget=args.scale_to_budget, seeds=args.seeds,
            on_row=lambda rows: bench.write_results(with_summary(rows), Path(args.out))))
    for path in bench.write_results(rows, Path(args.out)):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            _list(args.json)
            return 0
        if args.command == "bench":
            return _bench(args)
        from .methods.distributed import launched_by_torchrun
        from .runs import RunRequest, RunStore, create_run

        if args.command == "train" and (args.estimate or args.budget_minutes is not None):
            request = _timed_request(args)
            if args.estimate:
                _print_estimate(request, args.json)
                return 0
        runs_folder = _runs_folder(args)
        if args.command == "runs" and not args.run_id and not runs_folder.is_dir():
            # listing creates nothing: a mistyped --runs-dir would otherwise leave an empty runs folder behind
            print(f"no runs: {runs_folder} does not exist", file=sys.stderr)
            if args.json:
                print("[]")
            return 0
        store = RunStore(runs_folder)
        if args.command == "runs":
            return runs_command(store, args)
        if args.command in ("export", "tag", "tags", "suspects"):
            return audit_command(store, args)
        if args.command == "worker":
            return _work(store, args.device, args.until_idle)
        if args.command == "cancel":
            from .runs.jobs import stop_run

            outcome = stop_run(store, args.run_id)
            print({"cancelled": f"run {args.run_id}: cancelled while queued",
                   "interrupted": f"run {args.run_id}: its process had died; recorded interrupted",
                   "asked": f"run {args.run_id}: asked to stop; it is recorded cancelled at its next step"}[outcome])
            return 0
        if args.command in ("train", "resume") and launched_by_torchrun() and not args.queue:
            return _run_distributed(args, store)
        if args.command == "resume":
            store.requeue(args.run_id, for_workers=args.queue)
            run_id = args.run_id
        else:
            if args.budget_minutes is None:
                request = _request(args)
            run_id = create_run(store, request, for_workers=args.queue)
        if args.queue:
            print(json.dumps(run_json(store.get(run_id))) if args.json else run_id)
            return 0
        return _run_in_foreground(store, run_id, args.json)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
