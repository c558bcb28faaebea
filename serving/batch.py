"""Deblur an archive of photos and videos on every core of a machine, or of a Ray cluster, with Ray Data.

Examples:
    python -m serving.batch photos/ deblurred/                   # embedded local Ray, workers of up to 4 threads
    banet-batch photos/ clips/ out/ --workers 2 --threads 1 --precision int8
    banet-batch /shared/photos /shared/out --address auto --gpus-per-worker 1   # on a node of a Ray cluster

The planning is the command line's (``python -m runtime``): the same inputs (files, and the images and videos in
folders), the same output names, the same refusals and the same bytes in every output. Each Ray worker (an actor)
holds one ``Deblurrer`` (CPU threads, or one GPU each) and reads, deblurs and writes one file at a time, written
whole under a temporary name and renamed into place, so a job killed half-way leaves only complete outputs.

Resumable: an output that exists is skipped (it was written whole) when the job record, DST/banet-batch-job.json,
says it was made from the same input, unchanged, so running the same command again after a kill or a crash finishes
the job without redoing or losing anything; --force redoes it. The record notes each output's input (its resolved
path, size and modification time) before the work starts and again when the job ends, so a killed job's record is
right too. An existing output made from another input (a second camera card's IMG_0001.JPG into the same DST), from
its input before that changed, or that the record does not name is refused (that file: never skipped as done, never
replaced; remove it, pass --force or choose another DST), as is a DST whose record, from an older serving.batch,
names no inputs. The record also holds the options that change the outputs (model file and its sha256, backend,
precision, tiles, side by side, GPU or CPU): a rerun with other ones is refused, since it would mix outputs of
both, unless --force (which redoes every file). One job at a time per DST (a lock, DST/.banet-batch.lock). Two
inputs that would land on one output, and an output that is the same file as an input, are refused (those files
only, even with --force). A file that fails is reported and never stops the job. Every file's outcome (ok, failed,
skipped, refused, or not run when the job stopped early, with the one-line reason) goes to a results table,
DST/banet-batch-results.csv unless --results says otherwise, written even when the job stops early, and a summary
(files, failures, images/s, each worker's rate) ends the run.

On a cluster (``--address auto`` on one of its nodes, after ``ray start``), SRC, DST and --model must be on a file
system every node mounts at the same path; each node needs this package installed with the batch extra. Each
worker reserves its CPU threads, its GPUs and the memory its model needs; a request no node (or the whole
cluster) can place is refused at once instead of waiting forever.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from banet.cli_types import path_arg
from banet.errors import first_line
from banet.hashing import file_sha256
from banet.outputs import partial_path, real_path, write_atomic, write_error
from runtime.cli import (
    add_deblur_options,
    collect_named,
    deblur_file,
    file_error,
    output_refusals,
)
from runtime.options import deblurrer_options
from serving.request_rules import number

log = logging.getLogger("serving.batch")

RAY_MISSING = "serving.batch needs Ray: pip install 'banet-deploy[batch]'"
RESULTS_NAME = "banet-batch-results.csv"
#: In DST: the options its outputs were made with (a rerun with other ones is refused) and the input each output
#: was made from (``outputs``: :func:`input_identity` by output, :func:`made_from`), and the job's lock.
JOB_NAME = "banet-batch-job.json"
LOCK_NAME = ".banet-batch.lock"
#: The options recorded in the job record, by the command-line flag that sets each (they change output bytes).
RECORDED_FLAGS = {"model": "--model", "backend": "--backend", "precision": "--precision", "tile": "--tile",
                  "tile_overlap": "--tile-overlap", "side_by_side": "--side-by-side",
                  "strip_metadata": "--strip-metadata", "device": "--gpus-per-worker"}
#: What the job record keeps of the input an output was made from (:func:`input_identity`).
IDENTITY_KEYS = ("input", "size", "mtime_ns")
#: Host memory a worker's process takes besides its model and the Deblurrer's working budget (Python, the
#: inference library, a decoded photo and its output).
WORKER_OVERHEAD_MB = 512
#: Default CPU threads per worker. Measured (benchmarks/results/batch_AMD-EPYC_2026-12-05.md, 50 photos of 512 px):
#: on 2 cores one 2-thread worker ran 0.78 images/s, two 1-thread workers 0.44 in all (the inference libraries scale
#: across threads better than two models share the cores). 4 caps a worker on a large node; not measured above 2.
DEFAULT_WORKER_THREADS = 4
#: How long Ray Data waits for the workers to start (a request Ray cannot place fails after this, never hangs).
ACTOR_START_TIMEOUT_S = 600
#: Longest temporary folder (bytes) Ray's session folder goes under: its Unix socket
#: ``<folder>/banet-ray-XXXXXXXX/session_<date>_<time>_<pid>/sockets/plasma_store`` must fit in 107 bytes.
RAY_TEMP_BASE_MAX = 24
#: Testing hook: a worker that has written this many files stops (sleeps) before returning the last, so a test
#: can kill a job at a known point.
PAUSE_ENV = "BANET_BATCH_PAUSE_AFTER"
EXIT_STATUS = """exit status:
  0    every file deblurred (or already done by an earlier run)
  1    not every file is done: the job did not run (the batch extra (Ray) missing, inputs, DST, model or
       --results refused, DST locked by another job or made with other options, Ray could not start or cannot
       place the workers), or it ran and a file failed or was refused (its output there made from another
       input, or from this one before it changed), or it stopped early (a worker could not load the model, a
       worker or node was lost); the error lines and the results table say which, and the same command resumes
  2    usage error: an unknown option or a bad value (as for every command)
  130  interrupted (Ctrl-C): finished files are kept and the results table written
  143  terminated (SIGTERM) while deblurring: the same"""
#: Columns of the results table, one row per input file, in input order.
COLUMNS = ("file", "output", "status", "error", "seconds", "frames", "worker")
#: What a worker returns per file: the table's columns plus when the work started and ended (epoch seconds) and
#: whether the worker itself could not start (its model did not load: the job stops).
RESULT_KEYS = ("index", *COLUMNS, "started", "finished", "fatal")


class DeblurWorker:
    """One Ray Data actor: one :class:`~runtime.Deblurrer`, and each file read, deblurred and written whole by
    :func:`runtime.cli.deblur_file`, exactly as the command line does; a failure becomes the file's result row."""

    def __init__(self, options: dict, with_side: bool, max_pixels: int, cwd: str | None,
                 pause_after: int | None = None, keep_metadata: bool = True) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.with_side = with_side
        self.max_pixels = max_pixels
        self.keep_metadata = keep_metadata
        self.pause_after = pause_after
        self.written = 0
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
                                            self.max_pixels, keep_metadata=self.keep_metadata)
            except Exception as exc:  # one file's failure, whatever it is, never stops the others
                log.debug("%s failed", source, exc_info=True)
                row.update(status="failed", error=file_error(Path(source), exc))
            self.written += 1
            if self.pause_after is not None and self.written >= self.pause_after:
                self._pause()
        finished = time.time()
        return dict(row, seconds=round(finished - started, 4), started=started, finished=finished)

    @staticmethod
    def _pause(limit_s: float = 300.0) -> None:
        """The testing hook (:data:`PAUSE_ENV`): wait to be killed; exit without writing more if nobody does."""
        time.sleep(limit_s)
        os._exit(3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.batch", description=__doc__, epilog=EXIT_STATUS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", type=path_arg, nargs="+", metavar="SRC",
                        help="image files, video files or folders of them (as for python -m runtime)")
    parser.add_argument("output", type=path_arg, metavar="DST", help="output folder")
    parser.add_argument("--workers", type=number(int, 1), default=None,
                        help="Ray workers, each with its own model (default: as many as the cluster's CPUs allow at "
                             "--threads each, or its GPUs at --gpus-per-worker each)")
    parser.add_argument("--gpus-per-worker", type=number(int, 0), default=0, metavar="N",
                        help="GPUs each worker reserves (device cuda); default 0: CPU workers")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on: 'auto' for the one this node belongs to (ray start), or its "
                             "head's host:port; default: an embedded Ray on this machine, started and stopped here")
    parser.add_argument("--results", type=path_arg, default=None,
                        help=f"results table (CSV, one row per file); default DST/{RESULTS_NAME}")
    # at least 1: each worker reserves that many of the Ray cluster's CPUs (its nodes may have more than this one)
    add_deblur_options(parser, threads_type=number(int, 1),
                       threads_help=f"CPU threads (and Ray CPUs) per worker (default: {DEFAULT_WORKER_THREADS}, or a "
                                    "node's CPUs where fewer, or the cores divided by --workers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the batch job; the exit status is :data:`EXIT_STATUS`'s (0 all done, 1 not every file done, whether the
    job ran or not, 2 a usage error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:  # the imports too: a Ctrl-C in their second was a traceback from inside Ray Data
        try:
            import ray  # noqa: F401
        except ImportError:
            print(RAY_MISSING, file=sys.stderr)
            return 1
        try:
            import ray.data  # noqa: F401
        except ImportError as exc:  # Ray without its data extra, or a pyarrow built for another numpy
            print(f"serving.batch needs Ray Data, which does not import here ({first_line(exc)}): pip install "
                  "'banet-deploy[batch]'", file=sys.stderr)
            return 1
        return _run(args)
    except KeyboardInterrupt as exc:
        what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted (Ctrl-C)", 130)
        print(f"{what}: finished files are kept and the results table written; run the same command again to "
              "resume", file=sys.stderr)
        return code


class Terminated(KeyboardInterrupt):
    """SIGTERM while Ray runs: the job stops as after Ctrl-C (Ray stopped, the table written), exit status 143."""


def _terminate(signum: int, frame) -> None:
    raise Terminated()


def plan(inputs: list[Path], targets: list[Path], force: bool,
         made: Mapping[Path, dict] | None = None) -> tuple[list[dict | None], list[int]]:
    """The command line's refusals for ``inputs`` and their ``targets`` (:func:`runtime.cli.output_name` in DST),
    with resuming: (a result row for each input already settled, None for the rest; indexes of those to deblur).

    Refused (collisions, an output that is an input) are never written, even with ``force``. An existing output
    is complete (outputs are only ever renamed into place); unless ``force`` it is skipped as done when ``made``
    (the job record's entries by output path, :func:`made_from`) says it was made from its input as that is now,
    and refused otherwise (:func:`not_done`): never skipped as done, never replaced.
    """
    refusals = output_refusals(inputs, targets)
    made = made or {}
    rows: list[dict | None] = [None] * len(inputs)
    todo = []
    for index, (source, target) in enumerate(zip(inputs, targets)):
        if index in refusals:
            rows[index] = _row(source, target, "refused", refusals[index])
        elif target.exists() and not force:
            why = not_done(source, target, made_from(made.get(target), target))
            rows[index] = (_row(source, target, "refused", why) if why else
                           _row(source, target, "skipped", "output exists (done by an earlier run); --force redoes it"))
        else:
            todo.append(index)
    return rows, todo


def input_identity(source: Path) -> dict:
    """What the job record keeps of the input an output is made from (:data:`IDENTITY_KEYS`): its path resolved
    (links followed: one file whichever SRC named it; two camera cards' IMG_0001.JPG differ), its size and its
    modification time in nanoseconds (None when it cannot be read: the worker reports that file as failed).

    Size and mtime_ns, not a content hash: every rerun checks every input, and hashing would read the whole archive
    (terabytes of photos and videos) again just to say "already done", where ``stat`` costs nothing. An edited
    photo, or another file copied in under its name, changes them (the test make and rsync use); a file rewritten
    with its size and mtime forged back is not caught."""
    try:
        path = str(Path(source).resolve())
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        path = os.path.abspath(source)
    try:
        stat = os.stat(source)
    except OSError:
        return {"input": path, "size": None, "mtime_ns": None}
    return {"input": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _output_stamp(target: Path) -> list[int] | None:
    """The file at ``target`` as a pending record entry notes it before it is replaced (size, mtime_ns, inode: an
    output renamed into place is a new file), None when there is none."""
    try:
        stat = target.lstat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def made_from(entry: dict | None, target: Path) -> dict | None:
    """The input (:func:`input_identity`) the existing output ``target`` was made from as the job record's
    ``entry`` for it says; None when the record does not know.

    An entry is a finished output's input and, while a job works on it, ``pending``: the input it is being made
    from and the file it replaces (None when none), noted before the work starts. A job killed before it could
    confirm the output leaves the pending entry: the output was made from that input when it exists and is not
    the file that was there before; otherwise it is still the finished output the entry names (if any)."""
    if not isinstance(entry, dict):
        return None
    pending = entry.get("pending")
    if isinstance(pending, dict) and _output_stamp(target) not in (None, pending.get("replaces")):
        return {key: pending.get(key) for key in IDENTITY_KEYS}
    return {key: entry.get(key) for key in IDENTITY_KEYS} if entry.get("input") is not None else None


def not_done(source: Path, target: Path, made: dict | None) -> str:
    """Why the existing output ``target`` is not the finished output of ``source`` as it is now (one line with the
    remedy), "" when it is: ``made`` (:func:`made_from`) names another input, or ``source`` before it changed, or
    nothing."""
    current = input_identity(source)
    if made is None:
        why = f"{JOB_NAME} does not say which input made it (another tool's file?)"
    elif made["input"] != current["input"]:
        why = f"was made from another input, {made['input']}, by an earlier run"
    elif current["size"] is None or (made["size"], made["mtime_ns"]) != (current["size"], current["mtime_ns"]):
        why = f"was made from {source} before it changed (its size or modification time differs)"
    else:
        return ""
    return (f"{target} exists but {why}: not replaced; choose another DST, or remove it (or pass --force, which "
            "redoes every file) to replace it")


def remove_stale_partials(targets: list[Path], inputs: list[Path]) -> int:
    """Remove the temporary files a killed run left for ``targets`` (:func:`banet.outputs.partial_path`: images
    ``<name>.partial``, videos ``<name>.partial<extension>``: ``clip.MOV.partial.MOV``), never one of the
    ``inputs``; returns how many.

    A symbolic link of that name (to a file or to nothing) is removed too, whatever it points to (only the link):
    the writers open the temporary name and would write through it, outside DST or over an input."""
    given = {real_path(p) for p in inputs}
    named = {p.absolute() for p in inputs}
    removed = 0
    for target in targets:
        for partial in {partial_path(target), partial_path(target, keep_suffix=True)}:
            if partial.is_symlink() and partial.absolute() not in named:
                partial.unlink(missing_ok=True)
                removed += 1
            elif partial.is_file() and real_path(partial) not in given:
                partial.unlink(missing_ok=True)
                removed += 1
    return removed


def check_results_path(path: Path, given: list[Path], inputs: list[Path], targets: list[Path], force: bool,
                       own: set[Path] = frozenset(), output: Path | None = None) -> Path:
    """Refuse a results table that would land among what the user gave (an input file, or in a folder given as
    SRC; DST may be a subfolder of SRC), replace an output or the job's own files in ``output`` (its record and
    lock: the table would be overwritten by the record, even with ``force``), or (without ``force``) replace a
    file that is not this job's own table: ``own`` (resolved paths: DST's default table, the one DST's job record
    names)."""
    key = real_path(path)
    if output is not None and key in {real_path(output / name) for name in (JOB_NAME, LOCK_NAME)}:
        raise FileExistsError(f"{path}: the results table would replace this job's {key.name} in DST; choose "
                              "another --results file")
    if key in {real_path(p) for p in inputs} or key.parent in {real_path(p) for p in given if p.is_dir()}:
        raise FileExistsError(f"{path}: the results table would be written among the inputs; choose another "
                              "--results file")
    if key in {real_path(t) for t in targets}:
        raise FileExistsError(f"{path}: the results table would replace an output; choose another --results file")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give --results a file name ending in .csv")
    if path.exists() and not force and not _is_results_table(path):
        raise FileExistsError(f"{path} exists and is not a results table of serving.batch; pass --force to replace "
                              "it or choose another --results file")
    if path.exists() and not force and key not in own:
        raise FileExistsError(f"{path} is the results table of another serving.batch job (not this DST's); pass "
                              "--force to replace it or choose another --results file")
    return path


def _is_results_table(path: Path) -> bool:
    try:
        with open(path, newline="") as handle:
            return next(csv.reader(handle), None) == list(COLUMNS)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def job_options(args: argparse.Namespace) -> dict:
    """The options that change the bytes of the outputs, as :data:`JOB_NAME` records them: the model file (its
    absolute path and sha256; ``default`` for the embedded one), backend, precision, tiles, side by side, metadata
    stripped or kept and whether workers run on GPUs."""
    model = None if args.model is None else {"path": str(Path(args.model).resolve()), "sha256": file_sha256(args.model)}
    return {"model": model or "default", "backend": args.backend, "precision": args.precision, "tile": args.tile,
            "tile_overlap": args.tile_overlap, "side_by_side": args.side_by_side, "strip_metadata": args.strip_metadata,
            "device": "cuda" if args.gpus_per_worker else "cpu"}


def recorded_outputs(record: dict | None) -> dict[str, dict]:
    """The job record's entries (:func:`made_from`) by output path relative to DST; none for a damaged one."""
    outputs = (record or {}).get("outputs")
    return {key: entry for key, entry in outputs.items() if isinstance(entry, dict)} if isinstance(outputs, dict) \
        else {}


def _output_key(output: Path, target: Path) -> str:
    return target.relative_to(output).as_posix()


def read_job(output: Path) -> dict | None:
    """DST's job record (:data:`JOB_NAME`), None when there is none; a file of that name that is not one (or
    cannot be read) is an empty record, so every option differs from it."""
    path = output / JOB_NAME
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("tool") == "serving.batch" else {}


def check_job(output: Path, options: dict, force: bool, targets: list[Path]) -> None:
    """Refuse (without ``force``) a job whose output-changing options differ from those DST's outputs were made
    with, when any of its ``targets`` exists: resuming would skip those outputs and mix files made two ways; and
    one whose ``targets`` exist in a DST without a job record (files another tool made: ``python -m runtime
    --side-by-side`` outputs were taken as this job's finished ones), or whose record, from an older serving.batch,
    does not say which input made each output (:func:`made_from`): treated as no record, never as done."""
    record = read_job(output)
    if record == {} and not force:  # a file of that name the user made (or a damaged record): never replaced
        raise FileExistsError(f"{output / JOB_NAME} exists and is not the job record of serving.batch; pass --force to "
                              "replace it, or choose another DST")
    if force:
        return
    existing = [target for target in targets if target.exists()]
    if record is None and existing:  # every job records itself before its first output: these are not a job's
        raise FileExistsError(f"{output} already holds {len(existing)} file(s) named as this job's outputs (e.g. "
                              f"{existing[0].name}) but no {JOB_NAME}: serving.batch did not make them, and would "
                              "skip them as done; pass --force to replace them, or choose another DST")
    # any output the record names counts, not only this job's: a job over another SRC with other options (a second
    # memory card into the same DST) rewrote the record's options, and the first card's outputs, made with the
    # earlier ones, were then skipped as done by a rerun with the new options
    if record is None or not (existing or any((output / key).exists() for key in recorded_outputs(record))):
        return  # (a job that wrote nothing, its workers unable to load the model, pins nothing)
    recorded = record.get("options", {})
    differing = [flag for key, flag in RECORDED_FLAGS.items() if recorded.get(key, "?") != options[key]]
    if differing:
        raise FileExistsError(f"{output} holds outputs made with other options ({', '.join(differing)} differ from "
                              f"{output / JOB_NAME}); pass --force to redo every file with these, or choose another "
                              "DST")
    if record.get("redoing"):
        raise FileExistsError(f"{output}: a --force run that changed the options stopped before redoing every file "
                              "(outputs made with the earlier options may remain); pass --force to finish it")
    if "outputs" not in record:
        raise FileExistsError(f"{output / JOB_NAME} is from an older serving.batch that did not record which input "
                              f"made each output, so its {len(existing)} file(s) named as this job's outputs (e.g. "
                              f"{existing[0].name}) cannot be taken as done; pass --force to redo them, or choose "
                              "another DST")


def write_job(output: Path, options: dict, results: Path, redoing: bool = False,
              outputs: dict[str, dict] | None = None) -> None:
    """Record the options DST's outputs are made with, this job's results table and ``outputs``, the input each
    output was (or is being) made from (:func:`made_from`); ``redoing``: a --force run that changed the options has
    not yet redone every file (until then a run without --force is refused). Written whole (a rename)."""
    record = {"tool": "serving.batch", "options": options, "results": str(results.resolve()), "redoing": redoing,
              "outputs": outputs or {}}
    write_atomic(output / JOB_NAME, (json.dumps(record, indent=2) + "\n").encode())


class JobLocked(BlockingIOError):
    """Another serving.batch job holds DST's lock."""


@contextlib.contextmanager
def locked(output: Path):
    """Hold DST's lock (:data:`LOCK_NAME`, ``flock``) for the whole job: a second job on the same DST is refused,
    where it would remove the first one's partial files and race for the same outputs."""
    import fcntl

    try:  # never through a symbolic link: opening one to nothing would create its target, outside DST
        fd = os.open(output / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError:
        if (output / LOCK_NAME).is_symlink():
            raise FileExistsError(f"{output / LOCK_NAME} is a symbolic link, not serving.batch's lock; remove it or "
                                  "choose another DST") from None
        raise
    with os.fdopen(fd, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobLocked(f"another serving.batch job is running on {output} (it holds "
                                  f"{output / LOCK_NAME}); wait for it to finish or choose another DST") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before anything is written, a DST that is not a folder or is one of the SRC folders (every output
    would be its input, and the job's files would land among the inputs), and a path given that is not valid
    UTF-8 (Ray cannot start with one on its command line)."""
    given = [*args.inputs, args.output, args.model, args.results]
    for path in (p for p in given if p is not None):
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            raise ValueError(f"{shown}: the name is not valid UTF-8, which Ray cannot pass to its workers; rename "
                             "it") from None
    output = args.output
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"{output} exists and is not a folder; give DST a folder (made if missing)")
    if output.is_dir() and any(p.is_dir() and p.resolve() == output.resolve() for p in args.inputs):
        raise FileExistsError(f"{output} is also an input folder (SRC): every output would be the same file as its "
                              "input; choose another DST")


def check_deblurrer_options(args: argparse.Namespace) -> None:
    """Refuse, before Ray starts, options every worker would refuse: a model file that is not there, a tile or
    thread count of the wrong kind (:func:`runtime.deblurrer.check_options`, as ``Deblurrer`` itself does)."""
    from runtime.deblurrer import DEFAULT_MEMORY_BUDGET_MB, check_options
    from runtime.loading import ModelNotFoundError

    options = deblurrer_options(args)
    model = options.pop("model")
    if model is not None and not Path(model).is_file():
        raise ModelNotFoundError(f"{model}: model file not found")
    # not --threads: a Ray node may have more CPUs than this machine (the cluster check places it); its kind is
    # argparse's to check
    check_options(model, options.pop("backend"), False, options.pop("tile"), options.pop("tile_overlap"),
                  DEFAULT_MEMORY_BUDGET_MB, {k: v for k, v in options.items() if k not in ("precision", "threads")})


def _row(source: Path, target: Path, status: str, error: str = "") -> dict:
    return dict(file=str(source), output=str(target), status=status, error=error, seconds=0.0, frames=0, worker="")


def write_results(path: Path, rows: list[dict]) -> None:
    """The results table, written whole (a rename) so a kill never leaves half of one."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A file name that is not UTF-8 (Python holds its bytes as surrogates) is written with those bytes escaped (\xff)
    text = buffer.getvalue().encode(errors="surrogateescape").decode(errors="backslashreplace")
    write_atomic(path, text.encode())


def _run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    address = args.address or os.environ.get("RAY_ADDRESS")  # Ray itself also connects to $RAY_ADDRESS
    try:
        check_paths(args)
        named = collect_named(args.inputs, args.recursive, exclude=args.output)
        inputs, targets = [source for source, _ in named], [args.output / name for _, name in named]
        check_deblurrer_options(args)
        options = job_options(args)
        check_job(args.output, options, args.force, targets)
        record = read_job(args.output) or {}
        own = {(args.output / RESULTS_NAME).resolve()} | ({Path(record["results"])} if record.get("results") else set())
        results = check_results_path(args.results or args.output / RESULTS_NAME, args.inputs, inputs, targets,
                                     args.force, own, args.output)
        _check_reachable(address)
        args.output.mkdir(parents=True, exist_ok=True)
    except Exception as exc:  # a missing folder or model, a results file that would replace something: one line
        log.debug("planning failed", exc_info=True)
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    try:
        with locked(args.output):
            try:
                check_job(args.output, options, args.force, targets)  # again, under the lock: a job that just finished
            except FileExistsError as exc:
                print(f"error: {first_line(exc)}", file=sys.stderr)
                return 1
            return _run_locked(args, inputs, targets, options, results, address, began)
    except (JobLocked, FileExistsError) as exc:  # another job on this DST, a link where its lock goes: one line
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # DST cannot be written (its lock, its job record): one line
        log.debug("DST cannot be written", exc_info=True)
        print(f"error: {write_error(exc, Path(exc.filename or args.output))}", file=sys.stderr)
        return 1


def _run_locked(args: argparse.Namespace, inputs: list[Path], targets: list[Path], options: dict, results: Path,
                address: str | None, began: float) -> int:
    """The job, holding DST's lock: plan, record its options and the input each output will be made from, deblur
    on Ray; the results table and the record are written however it ends (a file not reached is ``not run``)."""
    previous = read_job(args.output)
    changed = previous is not None and previous.get("options") != options
    redoing = previous is not None and ((args.force and changed) or bool(previous.get("redoing")))
    outputs = recorded_outputs(previous)
    keys = [_output_key(args.output, target) for target in targets]
    if changed:  # (--force) outputs of other inputs, made with the earlier options, are no longer vouched for: a
        # later run over them is refused ("does not say which input made it") instead of skipping them as done
        outputs = {key: entry for key, entry in outputs.items() if key in set(keys)}
    rows, todo = plan(inputs, targets, args.force, {args.output / key: entry for key, entry in outputs.items()})
    for index, row in enumerate(rows):
        if row is not None and row["status"] == "skipped":  # settled: a pending entry the output confirms
            outputs[keys[index]] = made_from(outputs.get(keys[index]), targets[index])
    # Noted before the work, not as the driver hears of each output: a worker renames its output into place before
    # the driver knows, so a job killed in between (SIGKILL, a lost node) would leave an output no record names.
    # A pending entry says which input it is being made from; made_from settles it from the output itself.
    for index in todo:
        replaces = _output_stamp(targets[index])
        kept = made_from(outputs.get(keys[index]), targets[index]) if replaces is not None else None
        outputs[keys[index]] = {**(kept or {}), "pending": {**input_identity(inputs[index]), "replaces": replaces}}
    write_job(args.output, options, results, redoing, outputs)
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
    code = 0
    try:
        if todo:
            code = _deblur_on_ray(args, address, [(inputs[i], targets[i]) for i in todo], rows, todo, timing)
    finally:  # however the job ends (a worker without a model, Ray failing, Ctrl-C): the table of what was done
        for index, row in enumerate(rows):
            pending = (outputs.get(keys[index]) or {}).get("pending")
            if row is None and isinstance(pending, dict) and \
                    _output_stamp(targets[index]) not in (None, pending.get("replaces")):
                # its worker put a new output in place before the driver heard of it (a stop in between): done, as
                # the next run finds it (made_from), not "not run"
                rows[index] = _row(inputs[index], targets[index], "ok")
            elif row is None:
                rows[index] = _row(inputs[index], targets[index], "not run",
                                   "the job stopped before this file; run the same command again to resume")
        for index in todo:
            if rows[index]["status"] == "ok":  # confirmed; the others keep their pending entry for the next run
                pending = outputs[keys[index]]["pending"]
                outputs[keys[index]] = {key: pending[key] for key in IDENTITY_KEYS}
        try:
            write_results(results, rows)
            # redoing ends once every file is redone with these options
            # (a file that failed and has no output holds nothing made with the earlier options either)
            write_job(args.output, options, results,
                      redoing and not all(row["status"] in ("ok", "refused")
                                          or (row["status"] == "failed" and not Path(row["output"]).exists())
                                          for row in rows), outputs)
        except OSError as exc:  # a full disk, a folder made read-only during the run: the outputs are still there
            print(f"error: {write_error(exc, results)}", file=sys.stderr)
            code = code or 1
    print(summary(rows, time.perf_counter() - began, timing, args.output, results))
    if code:
        return code
    return 1 if any(row["status"] in ("failed", "refused", "not run") for row in rows) else 0


def _deblur_on_ray(args: argparse.Namespace, address: str | None, jobs: list[tuple[Path, Path]], rows: list,
                   todo: list[int], timing: dict) -> int:
    """Run ``jobs`` on Ray Data and fill their ``rows``; 0 when the job ran, 1 when it stopped part-way or could
    not start (one line printed)."""
    import ray
    import ray.data
    from tqdm import tqdm

    started = time.perf_counter()
    memory = worker_memory(args)
    init = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                logging_level=logging.ERROR)
    temp_dir = None
    if not address:  # never fewer CPUs than the workers ask for: an actor that cannot be placed would wait forever
        init["num_cpus"] = max(os.cpu_count() or 1, (args.workers or 1) * (args.threads or 1))
        temp_dir = init["_temp_dir"] = ray_temp_dir()  # removed when Ray stops (a cluster keeps its own)
    try:
        # "local": always a fresh embedded Ray; None would join a cluster `ray start` left on this machine (or fail
        # on the address file of one that died).
        ray.init(address=address or "local", **init)
    except BaseException as exc:  # no cluster at --address, a Ray that cannot start here; Ctrl-C while it starts
        ray.shutdown()  # whatever it started (its agents outlived a Ctrl-C here, its temporary folder too)
        remove_ray_temp_dir(temp_dir)
        if not isinstance(exc, Exception):
            raise
        print(f"error: Ray could not start{f' at {address}' if address else ''}: {first_line(exc)}", file=sys.stderr)
        return 1
    # Ray's own SIGTERM handlers exit without a word (status 15) after a C++ stack dump; ours stops as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    results = None
    try:
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours is one bar of files, below
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S  # a backstop: Ray Data's default waits forever
        capacity = cluster_capacity()
        try:
            workers, threads = _workers_and_threads(args, capacity, len(jobs), memory)
            check_capacity(args, workers, threads, memory, capacity)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        log.info("%d worker(s), %s thread(s) each%s, %.1f GiB memory each", workers, threads or "all",
                 f", {args.gpus_per_worker} GPU(s) each" if args.gpus_per_worker else "", memory / 2**30)
        dataset = _pipeline(args, jobs, todo, workers, threads, memory)
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
    except ray.exceptions.GetTimeoutError:  # the backstop: workers that could not be placed in time
        print(f"error: the Ray workers did not start within {ACTOR_START_TIMEOUT_S} s (the cluster lacks the CPUs, "
              "GPUs or memory they reserve?); use fewer --workers, --threads or --gpus-per-worker", file=sys.stderr)
        return 1
    except ray.exceptions.RayError as exc:  # a worker killed (out of memory...) or a node lost: the job stops
        log.debug("Ray failed", exc_info=True)
        print(f"error: the Ray job stopped ({first_line(exc)}); the files finished are kept: run the same command "
              "again to resume", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else Ray Data raises: one line, the table still written by the caller
        log.debug("the job failed", exc_info=True)
        print(f"error: the job stopped ({type(exc).__name__}: {first_line(exc)}); the files finished are kept: run "
              "the same command again to resume", file=sys.stderr)
        return 1
    finally:
        results = None  # the iterator's executor stops before Ray does (else it outlives Ray and says so)
        ray.shutdown()
        remove_ray_temp_dir(temp_dir)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def ray_temp_dir() -> str:
    """A new folder for the embedded Ray's session (its logs, sockets and spilled objects), which the job removes
    when Ray stops (:func:`remove_ray_temp_dir`): Ray's default, ``/tmp/ray/session_*``, stays behind after every
    run. Made under ``$RAY_TMPDIR`` or the system's temporary folder, or /tmp where that path is too long for the
    Unix sockets Ray puts under it."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    if len(os.fsencode(base)) > RAY_TEMP_BASE_MAX and os.path.isdir("/tmp"):
        base = "/tmp"
    return tempfile.mkdtemp(prefix="banet-ray-", dir=base)


def remove_ray_temp_dir(path: str | None, attempts: int = 3) -> None:
    """Remove :func:`ray_temp_dir`'s folder after ``ray.shutdown()`` (a worker still exiting may write its last log
    line into it meanwhile: tried again); a folder that cannot be removed is named at debug level, never an error."""
    if path is None:
        return
    for attempt in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.2 * (attempt + 1))
    log.debug("could not remove Ray's temporary folder %s", path)


def cluster_capacity() -> dict:
    """What the Ray cluster offers the workers: CPUs, GPUs and memory (bytes) in all, and on its largest node (a
    worker runs on one node)."""
    import ray

    total = ray.cluster_resources()
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive", True)]
    capacity = {key: float(total.get(key, 0)) for key in ("CPU", "GPU", "memory")}
    capacity.update({f"node_{key}": max((float(n.get(key, 0)) for n in nodes), default=0.0)
                     for key in ("CPU", "GPU", "memory")})
    return capacity


def worker_memory(args: argparse.Namespace) -> int:
    """Bytes of memory each worker reserves with Ray: the Deblurrer's working budget, the model twice (the file's
    bytes as loaded, and the inference library's copy) and :data:`WORKER_OVERHEAD_MB`."""
    from banet.defaults import DEFAULT_ONNX
    from runtime.deblurrer import DEFAULT_MEMORY_BUDGET_MB

    model = Path(args.model) if args.model is not None else DEFAULT_ONNX
    try:
        size = model.stat().st_size
    except OSError:
        size = 0
    return int((DEFAULT_MEMORY_BUDGET_MB + WORKER_OVERHEAD_MB) * 2**20 + 2 * size)


def check_capacity(args: argparse.Namespace, workers: int, threads: int | None, memory: int, capacity: dict) -> None:
    """Refuse (ValueError, one line) workers the cluster cannot place: Ray Data would wait for them forever."""
    gpus, cpus = args.gpus_per_worker, threads or 1
    gib = 2**30
    if gpus and gpus > capacity["node_GPU"]:
        raise ValueError(f"--gpus-per-worker {gpus}: no node of the Ray cluster has {gpus} GPU(s) (the largest has "
                         f"{capacity['node_GPU']:g}, the cluster {capacity['GPU']:g} in all)")
    if gpus and workers * gpus > capacity["GPU"]:
        raise ValueError(f"{workers} worker(s) x {gpus} GPU(s) need {workers * gpus} GPUs; the Ray cluster has "
                         f"{capacity['GPU']:g}: use fewer --workers")
    if cpus > capacity["node_CPU"]:
        raise ValueError(f"--threads {cpus}: no node of the Ray cluster has {cpus} CPUs (the largest has "
                         f"{capacity['node_CPU']:g}); use fewer --threads")
    if workers * cpus > capacity["CPU"]:
        raise ValueError(f"{workers} worker(s) x {cpus} thread(s) need {workers * cpus} CPUs; the Ray cluster has "
                         f"{capacity['CPU']:g}: use fewer --workers or --threads")
    if memory > capacity["node_memory"]:
        raise ValueError(f"each worker needs {memory / gib:.1f} GiB of memory (its model and working budget); no node "
                         f"of the Ray cluster offers that much (the largest {capacity['node_memory'] / gib:.1f} GiB)")
    if workers * memory > capacity["memory"]:
        raise ValueError(f"{workers} worker(s) x {memory / gib:.1f} GiB of memory need {workers * memory / gib:.1f} "
                         f"GiB; the Ray cluster offers {capacity['memory'] / gib:.1f} GiB: use fewer --workers")


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
              threads: int | None, memory: int):
    """read (the planned file list) -> map_batches(DeblurWorker) on a pool of ``workers`` actors, each reserving
    ``threads`` CPUs (or 1), --gpus-per-worker GPUs and ``memory`` bytes."""
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
                                       max_pixels=round(args.max_megapixels * 1e6), cwd=_cwd_if_needed(args),
                                       pause_after=_pause_after(), keep_metadata=not args.strip_metadata),
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads or 1,
            num_gpus=args.gpus_per_worker or None, memory=memory, max_restarts=0)


def _pause_after() -> int | None:
    """The testing hook's file count (:data:`PAUSE_ENV`), None when unset."""
    value = os.environ.get(PAUSE_ENV, "")
    return int(value) if value.strip().isdigit() else None


def _cwd_if_needed(args: argparse.Namespace) -> str | None:
    """The folder relative paths were given in, for the workers to work in; None when every path is absolute (a
    worker on another node need not have that folder)."""
    paths = [*args.inputs, args.output] + ([args.model] if args.model is not None else [])
    return None if all(Path(p).is_absolute() for p in paths) else os.getcwd()


def _workers_and_threads(args: argparse.Namespace, capacity: dict, files: int,
                         memory: int = 0) -> tuple[int, int | None]:
    """Workers and CPU threads per worker from the options and the cluster (:func:`cluster_capacity`): by default
    workers of :data:`DEFAULT_WORKER_THREADS` threads (fewer where a node has fewer CPUs), as many as the CPUs (or
    GPUs at --gpus-per-worker each) allow and the memory holds at ``memory`` bytes each, never more workers than
    files. (:func:`check_capacity` refuses what cannot be placed.)"""
    threads, workers = args.threads, args.workers
    fit = int(capacity.get("memory", 0) // memory) if memory else files
    if args.gpus_per_worker:
        workers = workers or max(1, min(int(capacity.get("GPU", 0) // args.gpus_per_worker), fit))
    else:
        cpus = int(capacity.get("CPU", 1))
        if threads is None:
            node_cpus = int(capacity.get("node_CPU") or cpus)
            threads = max(1, cpus // workers) if workers else max(1, min(DEFAULT_WORKER_THREADS, node_cpus))
        workers = workers or max(1, min(cpus // threads, fit))
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
             f"refused, {counts['skipped']} already done"
             + (f", {counts['not run']} not run (the job stopped early)" if counts["not run"] else "")
             + f", into {output} in {wall:.1f} s"]
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
