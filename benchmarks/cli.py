"""What every benchmark command line shares: its size option, the refusal of results files it would replace
(before any work), and writing them whole or not at all, with one line for a failure and for Ctrl-C (thread counts:
:func:`banet.cli_types.threads`).

Results files are named ``<kind>_<machine>_<date>`` (:func:`banet.machine.results_stem`), and
``benchmarks/results/`` holds committed ones: a second run on the same machine and day would replace them. So a
results file already there is refused before any work unless ``--force`` is given, in every folder (there is no
scratch folder of the benchmarks' own, as ``out/drift`` is ``calibration.drift``'s), and each file is written under
a temporary name and renamed into place (:func:`banet.outputs.write_atomic`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from banet.errors import first_line
from banet.outputs import check_output, write_error, write_together
from banet.shapes import DEFAULT_MAX_PIXELS, MIN_SIDE, hw_text, parse_hw


class BenchmarkError(Exception):
    """A benchmark that cannot run as asked; the message is one line naming the option or file."""


def size_type(even: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Callable[[str], tuple[int, int]]:
    """An argparse ``type``: ``HxW`` (:func:`banet.shapes.parse_hw`), each side at least :data:`MIN_SIDE`, at most
    ``max_pixels`` in all; with ``even``, both sides even (the network's input without padding: one stride-2 stage)."""

    def parse(text: str) -> tuple[int, int]:
        height, width = parse_hw(text)  # its ShapeError is an argparse.ArgumentTypeError
        if min(height, width) < MIN_SIDE:
            raise argparse.ArgumentTypeError(f"each side must be at least {MIN_SIDE} pixels, got {text!r}")
        if even and (height % 2 or width % 2):
            raise argparse.ArgumentTypeError(f"both sides must be even (the network takes multiples of 2 without "
                                             f"padding; the runtime pads), got {text!r}")
        if height * width > max_pixels:
            raise argparse.ArgumentTypeError(f"{text} is {height * width / 1e6:.10g} megapixels, over the limit of "
                                             f"{max_pixels / 1e6:g} (the runtime's largest photo)")
        return height, width

    parse.__name__ = "size"
    return parse


#: Where results files go unless ``--output`` names another folder (the committed ones live there).
RESULTS = Path("benchmarks") / "results"


def add_output(parser: argparse.ArgumentParser, kind: str | None) -> None:
    """The ``--output`` results folder of a benchmark whose files are named ``<kind>_<cpu>_<date>`` (None:
    ``<machine>_<date>``, benchmarks.run's main tables)."""
    from banet.cli_types import path_arg

    named = f"{kind}_<cpu>_<date>" if kind else "<machine>_<date>"
    parser.add_argument("--output", type=path_arg, default=RESULTS,
                        help=f"results folder (default benchmarks/results); files are named {named}")


def add_force(parser: argparse.ArgumentParser) -> None:
    """The ``--force`` every benchmark takes."""
    parser.add_argument("--force", action="store_true",
                        help="replace results files of the same name (same machine and date) already in the output "
                             "folder; without it they are refused before any work (benchmarks/results holds the "
                             "committed ones)")


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: intra-op threads of a benchmark that times one configuration at a time (default 2, the
    cores of the machines these results come from, or 1 on a one-CPU machine)."""
    from banet.cli_types import threads
    from banet.machine import usable_cpus

    parser.add_argument("--threads", type=threads(1), default=min(2, usable_cpus()), metavar="N",
                        help="intra-op threads (default 2, or 1 on a one-CPU machine)")


def check_results(folder: Path, names: Iterable[str], force: bool, inputs: dict | None = None) -> None:
    """Before any work: ``folder`` is a folder that can be written (created if missing), and none of ``names`` is
    already in it unless ``force`` (:func:`banet.outputs.check_output`; never one of ``inputs``, even with it).
    Raises :class:`BenchmarkError`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BenchmarkError(f"--output {folder} is a file; give a folder for the results")
    for name in names:
        check_output(folder / name, force=force, error=BenchmarkError, suffix=Path(name).suffix, inputs=inputs,
                     option="--output")


def write_files(files: dict[Path, bytes]) -> None:
    """The results files of one run (JSON, table, plots) written together, whole or not at all
    (:func:`banet.outputs.write_together`: a full disk leaves the files already there as they were, never a new
    JSON beside an old table); a failure is :class:`BenchmarkError` with :func:`banet.outputs.write_error`'s line."""
    try:
        for path in files:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_together({Path(path): data for path, data in files.items()})
    except OSError as exc:
        path = Path(exc.filename) if exc.filename else next(iter(files))
        raise BenchmarkError(write_error(exc, path, len(files.get(path, b"")) or None)) from exc


def check_repeated(options: dict[str, list]) -> None:
    """Refuse an option that names one value twice (``--threads 2 2``): every system would be timed twice, into rows
    of the same model, size, batch and threads, and each speed-up over PyTorch eager paired with the other pass's
    eager time (benchmarks.run keys by those four); the other benchmarks wrote the same row twice."""
    for option, values in options.items():
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            shown = ", ".join(hw_text(*v) if isinstance(v, tuple) else str(v) for v in repeated)
            raise BenchmarkError(f"{option} names {shown} more than once; give each value once")


def run_main(body: Callable[[], int], what: str) -> int:
    """Run a command's ``body``: :class:`BenchmarkError` and the one-line errors of the files it reads become
    ``error: <line>`` (exit 1), Ctrl-C ``interrupted`` (exit 130); ``what`` says what was not written then."""
    from banet.errors import ArtifactError, CheckpointError
    from runtime.stop_signals import run_stoppable

    def one_line_errors() -> int:
        try:
            return body()
        except (BenchmarkError, CheckpointError, ArtifactError) as exc:
            print(f"error: {first_line(exc)}", file=sys.stderr)
            return 1

    return run_stoppable(one_line_errors, what)  # Ctrl-C, SIGTERM or SIGHUP: one line
