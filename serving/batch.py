"""Deblur an archive of photos and videos on every core of a machine, or of a Ray cluster, with Ray Data.

Examples:
    python -m serving.batch photos/ deblurred/                   # embedded local Ray, one worker per core
    banet-batch photos/ clips/ out/ --workers 2 --threads 1 --precision int8
    banet-batch /shared/photos /shared/out --address auto --gpus-per-worker 1   # on a node of a Ray cluster

The planning is the command line's (``python -m runtime``): the same inputs (files, and the images and videos in
folders), the same output names, the same refusals and the same bytes in every output. Each Ray worker (an actor)
holds one ``Deblurrer`` (CPU threads, or one GPU each) and reads, deblurs and writes one file at a time, written
whole under a temporary name and renamed into place, so a job killed half-way leaves only complete outputs.

Resumable: an output that exists is skipped (it was written whole), so running the same command again after a
kill or a crash finishes the job without redoing or losing anything; --force redoes it. Two inputs that would land
on one output, and an output that is the same file as an input, are refused (those files only, even with
--force). A file that fails is reported and never stops the job. Every file's outcome (ok, failed, skipped,
refused, with the one-line reason) goes to a results table, DST/banet-batch-results.csv unless --results says
otherwise, and a summary (files, failures, images/s, each worker's rate) ends the run. Exit status: 0 all done,
1 any file failed or was refused, 2 Ray is not installed, 130 interrupted.

On a cluster (``--address auto`` on one of its nodes, after ``ray start``), SRC, DST and --model must be on a file
system every node mounts at the same path; each node needs this package installed with the batch extra.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

from banet.errors import first_line
from banet.outputs import partial_path, write_atomic, write_error
from runtime.cli import (
    add_deblur_options,
    collect_inputs,
    deblur_file,
    deblurrer_options,
    file_error,
    output_name,
    output_refusals,
)

log = logging.getLogger("serving.batch")

RAY_MISSING = "serving.batch needs Ray: pip install 'banet-deploy[batch]'"
RESULTS_NAME = "banet-batch-results.csv"
#: Columns of the results table, one row per input file, in input order.
COLUMNS = ("file", "output", "status", "error", "seconds", "frames", "worker")
#: What a worker returns per file: the table's columns plus when the work started and ended (epoch seconds) and
#: whether the worker itself could not start (its model did not load: the job stops).
RESULT_KEYS = ("index", *COLUMNS, "started", "finished", "fatal")


class DeblurWorker:
    """One Ray Data actor: one :class:`~runtime.Deblurrer`, and each file read, deblurred and written whole by
    :func:`runtime.cli.deblur_file`, exactly as the command line does; a failure becomes the file's result row."""

    def __init__(self, options: dict, with_side: bool, max_pixels: int, cwd: str | None) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.with_side = with_side
        self.max_pixels = max_pixels
        self.deblurrer = None
        self.setup_error = None
        try:
            if cwd is not None:
                os.chdir(cwd)  # relative paths mean what they meant to the user, as for the command line
        except OSError:
            self.setup_error = (f"the folder the job was started in, {cwd}, is not on {socket.gethostname()}: give "
                                "absolute paths on a file system every node mounts")
            return
        try:
            from runtime import Deblurrer

            self.deblurrer = Deblurrer(**options)
        except Exception as exc:  # a model or option that cannot work: the job stops with this line
            self.setup_error = f"a worker could not load the model: {first_line(exc)}"

    def __call__(self, batch: dict) -> dict[str, list]:
        rows = [dict(self.deblur_one(str(source), str(target)), index=int(index))
                for index, source, target in zip(batch["index"], batch["file"], batch["output"])]
        return {key: [row[key] for row in rows] for key in RESULT_KEYS}

    def deblur_one(self, source: str, target: str) -> dict:
        started = time.time()
        row = dict(file=source, output=target, status="ok", error="", frames=0, worker=self.name, fatal=False)
        if self.deblurrer is None:
            row.update(status="failed", error=self.setup_error, fatal=True)
        else:
            try:
                row["frames"] = deblur_file(self.deblurrer, Path(source), Path(target), self.with_side,
                                            self.max_pixels)
            except Exception as exc:  # one file's failure, whatever it is, never stops the others
                log.debug("%s failed", source, exc_info=True)
                row.update(status="failed", error=file_error(Path(source), exc))
        finished = time.time()
        return dict(row, seconds=round(finished - started, 4), started=started, finished=finished)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", type=Path, nargs="+", metavar="SRC",
                        help="image files, video files or folders of them (as for python -m runtime)")
    parser.add_argument("output", type=Path, metavar="DST", help="output folder")
    parser.add_argument("--workers", type=_positive, default=None,
                        help="Ray workers, each with its own model (default: as many as the cluster's CPUs allow at "
                             "--threads each, or its GPUs at --gpus-per-worker each)")
    parser.add_argument("--gpus-per-worker", type=_positive, default=0, metavar="N",
                        help="GPUs each worker reserves (device cuda); default 0: CPU workers")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on: 'auto' for the one this node belongs to (ray start), or its "
                             "head's host:port; default: an embedded Ray on this machine, started and stopped here")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"results table (CSV, one row per file); default DST/{RESULTS_NAME}")
    add_deblur_options(parser, threads_help="CPU threads (and Ray CPUs) per worker (default: 1, or the machine's "
                                            "cores divided by --workers)")
    return parser


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the batch job; the exit status: 0 all deblurred (or already done), 1 any file failed or was refused,
    2 Ray is missing, 130 interrupted (Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        import ray  # noqa: F401
    except ImportError:
        print(RAY_MISSING, file=sys.stderr)
        return 2
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:  # Ray without its data extra, or a pyarrow built for another numpy
        print(f"serving.batch needs Ray Data, which does not import here ({first_line(exc)}): pip install "
              "'banet-deploy[batch]'", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130


def plan(inputs: list[Path], targets: list[Path], force: bool) -> tuple[list[dict | None], list[int]]:
    """The command line's refusals for ``inputs`` and their ``targets`` (:func:`runtime.cli.output_name` in DST),
    with resuming: (a result row for each input already settled, None for the rest; indexes of those to deblur).

    Refused (collisions, an output that is an input) are never written, even with ``force``; an existing output
    is complete (outputs are only ever renamed into place) and is skipped unless ``force``.
    """
    refusals = output_refusals(inputs, targets)
    rows: list[dict | None] = [None] * len(inputs)
    todo = []
    for index, (source, target) in enumerate(zip(inputs, targets)):
        if index in refusals:
            rows[index] = _row(source, target, "refused", refusals[index])
        elif target.exists() and not force:
            rows[index] = _row(source, target, "skipped", "output exists (done by an earlier run); --force redoes it")
        else:
            todo.append(index)
    return rows, todo


def remove_stale_partials(targets: list[Path], inputs: list[Path]) -> int:
    """Remove the temporary files a killed run left for ``targets`` (:func:`banet.outputs.partial_path`: images
    ``<name>.partial``, videos ``<name>.partial.mp4``), never one of the ``inputs``; returns how many."""
    given = {p.resolve() for p in inputs}
    removed = 0
    for target in targets:
        for partial in {partial_path(target), partial_path(target, keep_suffix=True)}:
            if partial.is_file() and partial.resolve() not in given:
                partial.unlink(missing_ok=True)
                removed += 1
    return removed


def check_results_path(path: Path, given: list[Path], inputs: list[Path], targets: list[Path], force: bool) -> Path:
    """Refuse a results table that would land among what the user gave (an input file, or in a folder given as
    SRC; DST may be a subfolder of SRC), replace an output, or replace a file that is not a table of ours (without
    ``force``)."""
    key = path.resolve()
    if key in {p.resolve() for p in inputs} or key.parent in {p.resolve() for p in given if p.is_dir()}:
        raise FileExistsError(f"{path}: the results table would be written among the inputs; choose another "
                              "--results file")
    if key in {t.resolve() for t in targets}:
        raise FileExistsError(f"{path}: the results table would replace an output; choose another --results file")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give --results a file name ending in .csv")
    if path.exists() and not force and not _is_results_table(path):
        raise FileExistsError(f"{path} exists and is not a results table of serving.batch; pass --force to replace "
                              "it or choose another --results file")
    return path


def _is_results_table(path: Path) -> bool:
    try:
        with open(path, newline="") as handle:
            return next(csv.reader(handle), None) == list(COLUMNS)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def check_deblurrer_options(args: argparse.Namespace) -> None:
    """Refuse, before Ray starts, options every worker would refuse: a model file that is not there, a tile or
    thread count of the wrong kind (:func:`runtime.deblurrer.check_options`, as ``Deblurrer`` itself does)."""
    from runtime.deblurrer import DEFAULT_MEMORY_BUDGET_MB, check_options
    from runtime.loading import ModelNotFoundError

    options = deblurrer_options(args)
    model = options.pop("model")
    if model is not None and not Path(model).is_file():
        raise ModelNotFoundError(f"{model}: model file not found")
    check_options(model, options.pop("backend"), False, options.pop("tile"), options.pop("tile_overlap"),
                  DEFAULT_MEMORY_BUDGET_MB, {k: v for k, v in options.items() if k != "precision"})


def _row(source: Path, target: Path, status: str, error: str = "") -> dict:
    return dict(file=str(source), output=str(target), status=status, error=error, seconds=0.0, frames=0, worker="")


def write_results(path: Path, rows: list[dict]) -> None:
    """The results table, written whole (a rename) so a kill never leaves half of one."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue().encode())


def _run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    try:
        inputs = collect_inputs(args.inputs)
        targets = [args.output / output_name(p) for p in inputs]
        results = check_results_path(args.results or args.output / RESULTS_NAME, args.inputs, inputs, targets,
                                     args.force)
        check_deblurrer_options(args)
        args.output.mkdir(parents=True, exist_ok=True)
    except Exception as exc:  # a missing folder or model, a results file that would replace something: one line
        log.debug("planning failed", exc_info=True)
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    rows, todo = plan(inputs, targets, args.force)
    stale = remove_stale_partials([t for t, row in zip(targets, rows) if row is None or row["status"] == "skipped"],
                                  inputs)
    if stale:
        log.info("removed %d partial file(s) left by an interrupted run", stale)
    skipped = sum(1 for row in rows if row is not None and row["status"] == "skipped")
    if skipped:
        log.info("%d of %d file(s) already done (skipped; --force redoes them)", skipped, len(inputs))
    for row in rows:
        if row is not None and row["status"] == "refused":
            print(f"error: {row['error']}", file=sys.stderr)
    timing = {"start_up": 0.0}
    if todo:
        code = _deblur_on_ray(args, [(inputs[i], targets[i]) for i in todo], rows, todo, timing)
        if code:
            return code
    try:
        write_results(results, rows)
    except OSError as exc:  # a full disk, a folder made read-only during the run: the outputs are still there
        print(f"error: {write_error(exc, results)}", file=sys.stderr)
        return 1
    print(summary(rows, time.perf_counter() - began, timing, args.output, results))
    return 1 if any(row["status"] in ("failed", "refused") for row in rows) else 0


def _deblur_on_ray(args: argparse.Namespace, jobs: list[tuple[Path, Path]], rows: list, todo: list[int],
                   timing: dict) -> int:
    """Run ``jobs`` on Ray Data and fill their ``rows``; non-zero when the job cannot run (one line printed)."""
    import ray
    import ray.data
    from tqdm import tqdm

    started = time.perf_counter()
    address = args.address or os.environ.get("RAY_ADDRESS")  # Ray itself also connects to $RAY_ADDRESS
    init = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                logging_level=logging.ERROR)
    if not address:  # never fewer CPUs than the workers ask for: an actor that cannot be placed would wait forever
        init["num_cpus"] = max(os.cpu_count() or 1, (args.workers or 1) * (args.threads or 1))
    try:
        _check_reachable(address)
        # "local": always a fresh embedded Ray; None would join a cluster `ray start` left on this machine (or fail
        # on the address file of one that died).
        ray.init(address=address or "local", **init)
    except Exception as exc:  # no cluster at --address, a Ray that cannot start here
        print(f"error: Ray could not start{f' at {address}' if address else ''}: {first_line(exc)}", file=sys.stderr)
        return 1
    try:
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is one bar of files, below
        workers, threads = _workers_and_threads(args, ray.cluster_resources(), len(jobs))
        log.info("%d worker(s), %s thread(s) each%s", workers, threads or "all",
                 f", {args.gpus_per_worker} GPU(s) each" if args.gpus_per_worker else "")
        dataset = _pipeline(args, jobs, todo, workers, threads)
        timing["start_up"] = time.perf_counter() - started
        results = dataset.iter_rows()
        with tqdm(total=len(jobs), desc="deblur", unit="file", disable=args.quiet) as bar:
            for result in results:
                row = {key: _plain(result[key]) for key in RESULT_KEYS}
                if row["fatal"]:
                    bar.close()
                    print(f"error: {row['error']}", file=sys.stderr)
                    return 1
                rows[row["index"]] = row
                if row["status"] == "failed":
                    tqdm.write(f"error: {row['error']}", file=sys.stderr)
                bar.update()
    except ray.exceptions.RayError as exc:  # a worker killed (out of memory...) or a node lost: the job stops
        log.debug("Ray failed", exc_info=True)
        print(f"error: the Ray job stopped ({first_line(exc)}); the files finished are kept: run the same command "
              "again to resume", file=sys.stderr)
        return 1
    finally:
        results = None  # the iterator's executor stops before Ray does (else it outlives Ray and says so)
        ray.shutdown()
    return 0


def _check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) nobody answers at, in seconds: Ray itself retries for
    minutes, printing a warning every few seconds."""
    if not address or address == "auto" or ":" not in address:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({first_line(exc)}); is the head node started "
                              "(ray start --head)?") from None


def _pipeline(args: argparse.Namespace, jobs: list[tuple[Path, Path]], todo: list[int], workers: int,
              threads: int | None):
    """read (the planned file list) -> map_batches(DeblurWorker) on a pool of ``workers`` actors."""
    import ray.data

    options = deblurrer_options(args)
    if args.gpus_per_worker:
        options.update(_gpu_options(args))
    elif threads is not None:
        options["threads"] = threads
    items = [{"index": index, "file": str(source), "output": str(target)}
             for index, (source, target) in zip(todo, jobs)]
    # Small blocks: each worker takes the next few files when it is free, and the bar moves as they finish.
    blocks = min(len(items), max(16 * workers, math.ceil(len(items) / 64)))
    with warnings.catch_warnings():
        # max_restarts has no named parameter yet: Ray's default restarts a dead worker and retries its file
        # forever (a file that crashes the model would loop); here the job stops and a rerun resumes it.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            DeblurWorker, batch_size=1, batch_format="numpy",
            fn_constructor_kwargs=dict(options=options, with_side=args.side_by_side,
                                       max_pixels=round(args.max_megapixels * 1e6), cwd=_cwd_if_needed(args)),
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads or 1,
            num_gpus=args.gpus_per_worker or None, max_restarts=0)


def _cwd_if_needed(args: argparse.Namespace) -> str | None:
    """The folder relative paths were given in, for the workers to work in; None when every path is absolute (a
    worker on another node need not have that folder)."""
    paths = [*args.inputs, args.output] + ([args.model] if args.model is not None else [])
    return None if all(Path(p).is_absolute() for p in paths) else os.getcwd()


def _workers_and_threads(args: argparse.Namespace, resources: dict, files: int) -> tuple[int, int | None]:
    """Workers and CPU threads per worker from the options and the cluster: by default as many 1-thread workers
    as there are CPUs (or GPUs at --gpus-per-worker each), never more workers than files."""
    threads, workers = args.threads, args.workers
    if args.gpus_per_worker:
        workers = workers or max(1, int(resources.get("GPU", 0) // args.gpus_per_worker))
    else:
        cpus = int(resources.get("CPU", 1))
        if threads is None:
            threads = max(1, cpus // workers) if workers else 1
        workers = workers or max(1, cpus // threads)
    return min(workers, files), threads


def _gpu_options(args: argparse.Namespace) -> dict:
    """Backend options for a GPU worker (Ray makes its GPU the only one it sees): PyTorch runs on ``cuda`` (the
    default model included), a TensorRT engine on device 0 and ONNX Runtime on its CUDA provider by default."""
    from runtime.loading import backend_for_path

    kind = args.backend
    if kind is None and args.model is not None:
        try:
            kind = backend_for_path(args.model)
        except ValueError:
            kind = None
    return {"device": "cuda"} if kind in (None, "torch") else {}


def _plain(value):
    """A numpy scalar from a Ray batch as the Python value it holds."""
    return value.item() if hasattr(value, "item") else value


def summary(rows: list[dict], wall: float, timing: dict, output: Path, results: Path) -> str:
    """The closing lines: files by outcome, images per second (with and without start-up), each worker's rate."""
    counts = defaultdict(int)
    for row in rows:
        counts[row["status"]] += 1
    done = [row for row in rows if row["status"] == "ok"]
    frames = sum(row["frames"] for row in done)
    lines = [f"{len(rows)} file(s): {counts['ok']} deblurred, {counts['failed']} failed, {counts['refused']} "
             f"refused, {counts['skipped']} already done, into {output} in {wall:.1f} s"]
    worked = [row for row in rows if row.get("started")]
    if done and worked:
        span = max(row["finished"] for row in worked) - min(row["started"] for row in worked)
        lines.append(f"  {frames} image(s)/frame(s): {frames / max(span, 1e-9):.2f} images/s while the workers ran "
                     f"({span:.1f} s), {frames / max(wall, 1e-9):.2f} images/s overall (Ray start-up "
                     f"{timing['start_up']:.1f} s)")
        per_worker: dict[str, list] = defaultdict(lambda: [0, 0, 0.0])
        for row in worked:
            entry = per_worker[row["worker"]]
            entry[0] += 1
            entry[1] += row["frames"]
            entry[2] += row["seconds"]
        for name, (files, images, seconds) in sorted(per_worker.items()):
            lines.append(f"  worker {name}: {files} file(s), {images / max(seconds, 1e-9):.2f} images/s busy")
    lines.append(f"  results: {results}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
