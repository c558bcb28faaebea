"""Deblur image files, folders and videos from the command line.

Examples:
    python -m runtime blurred.png                      # -> deblurred/blurred.png
    python -m runtime photos/ --output out/ --side-by-side
    python -m runtime clip.mp4 --model engines/my_model.onnx  # after python export/to_onnx.py --weights my_model.pth
    banet-deblur photos/ --tile 512

Outputs go to --output (default ./deblurred) and keep their names; videos keep their container where it is MP4
(.mp4, .m4v), QuickTime (.mov) or Matroska (.mkv), the others become .mp4. Nothing is written unless every output
is safe: an existing output is only replaced with --force; two inputs that would land on one output, or an output
that is the same file as an input (including hard links and symlinks: clip.mov with --output its own folder), are
refused even with --force. Files are written under a temporary name and renamed into place, so an interrupted run
never leaves a half-written output or touches another name of the same file. A file that fails (unreadable,
a NaN output, a full disk...) is reported on one line and the rest go on; the exit code is 1 if any failed, 130
after Ctrl-C (143, 129 after SIGTERM, SIGHUP). Images are read upright (EXIF orientation applied); multi-page or
animated files and images over --max-megapixels (decompression bombs) are refused from their header, before
decoding. PNG, JPEG, HEIF and AVIF outputs keep their input's colour profile, EXIF and XMP (orientation set
upright), JPEGs their IPTC too (--strip-metadata drops it all). ROS bags: python -m runtime.rosbag.
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import os
import sys
from pathlib import Path

import numpy as np

from banet.cli_types import path_arg
from banet.errors import OptionError, first_line
from banet.outputs import is_partial_name, make_folder, partial_path, real_path
from runtime.images import (
    IMAGE_SUFFIXES,
    quiet_opencv,
    read_image_and_metadata,
    write_image,
)
from runtime.options import add_model_options, deblurrer_options
from runtime.rosbag import BAG_SUFFIXES, is_rosbag
from runtime.video import output_suffix, transcode_video

#: Video files by extension, camcorder (AVCHD .mts/.m2ts, MPEG-TS), phone (.3gp) and older formats included: before,
#: a camcorder's .MTS was taken for an image and failed as one.
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mts", ".m2ts", ".ts", ".3gp", ".mpg", ".mpeg",
                  ".flv", ".wmv"}
#: Camera raw files by extension (Canon, Nikon, Sony, Adobe DNG, Fujifilm, Olympus, Panasonic, Pentax, Samsung, Sigma,
#: Hasselblad, Phase One, Leica, Minolta, Kodak, Leaf, Epson, Mamiya): sensor data, not yet a picture to deblur.
RAW_SUFFIXES = frozenset({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf",
                          ".rw2", ".pef", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".rwl", ".mrw", ".kdc", ".dcr",
                          ".mos", ".erf", ".mef"})
#: How many extensions the warning about files left out names (the most frequent), before "...".
_NAMED_SUFFIXES = 5
log = logging.getLogger("runtime.cli")


def collect_inputs(paths: list[Path], recursive: bool = False, exclude: Path | None = None) -> list[Path]:
    """The input files of :func:`collect_named`."""
    return [source for source, _ in collect_named(paths, recursive, exclude)]


def collect_named(paths: list[Path], recursive: bool = False,
                  exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """(input file, its output's path relative to the output folder): files given directly, plus images and videos
    found (sorted) in given folders; a file reached twice (a folder and a file in it, the same name typed twice) is
    deblurred once, at its first place. A folder's hidden files are left out, as listings leave them out (macOS
    writes ``._IMG_0001.JPG`` metadata files beside the photos on a camera card: they are not images); one given by
    name is taken.

    Without ``recursive`` a folder is read at its top level and every output keeps its name in one folder:
    subfolders holding images or videos (a camera card's DCIM/100CANON) are named in a warning, and in the error when
    nothing else was found. With it, every subfolder is read too (hidden ones left out) and outputs mirror the tree
    below the folder given (``DCIM/100CANON/IMG_0001.JPG`` -> ``100CANON/IMG_0001.JPG``: cameras reuse names across
    folders); ``exclude`` (the output folder) is never read, so that outputs written inside a folder given are not
    taken for inputs by the next run. The other files of the folders read (a camera's raw files and sidecars) are
    counted by extension in one warning, or in the error when nothing was found: before, left out in silence."""
    found: dict[str, tuple[Path, Path]] = {}
    skipped: list[Path] = []
    linked: list[Path] = []  # links to folders holding media: never followed, so named (they were skipped silently)
    in_output = 0  # media files in the output folder inside a folder read: not inputs, and said so
    left: dict[str, Path] = {}  # neither images nor videos, by absolute path: a folder given twice counts once
    excluded = os.path.realpath(exclude) if exclude is not None else None
    for path in paths:
        if is_rosbag(path):
            raise ValueError(f"{path} is a ROS bag: deblur its camera topics with python -m runtime.rosbag "
                             f"{path}")
        if path.is_file() and path.name.lower().endswith(tuple(ARCHIVE_SUFFIXES)):  # was "not an image OpenCV
            # can decode (is it a .zip file of another kind, truncated or empty?)"
            raise ValueError(f"{path} is an archive, which is not unpacked here: unpack it and give the folder")
        if path.is_dir():
            if recursive:
                media, others, links, in_excluded = _walk(path, excluded)
                linked += links
                in_output += in_excluded
                files = [(p, p.relative_to(path).parent) for p in media]
            else:
                media, subfolders, others = _top_level(path)
                files = [(p, Path()) for p in media]
                held = [p for p in subfolders if os.path.realpath(p) != excluded and _holds_media(p)]
                skipped += [p for p in held if not p.is_symlink()]
                linked += [p for p in held if p.is_symlink()]
            left.update((os.path.abspath(p), p) for p in others)
        elif path.exists():
            files = [(path, Path())]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for file, folder in files:  # the same name, however written; links stay apart (each is its own output name)
            found.setdefault(os.path.abspath(file), (file, folder / output_name(file)))
    below = f"{len(skipped)} subfolder(s) holding images or videos ({', '.join(map(str, skipped[:3]))}" \
            f"{', ...' if len(skipped) > 3 else ''}) are not searched: give them as inputs too (e.g. " \
            f"{skipped[0].parent / '*'}/) or pass --recursive" if skipped else ""
    links = f"{len(linked)} linked subfolder(s) holding images or videos ({', '.join(map(str, linked[:3]))}" \
            f"{', ...' if len(linked) > 3 else ''}) are not followed (a link can lead back up the tree): give them " \
            "as inputs too" if linked else ""
    output = f"{in_output} image(s) or video(s) in the output folder {exclude} (inside a folder read) are not read " \
             "as inputs" if in_output else ""
    notes = [note for note in (_left_out(list(left.values())), below, links, output) if note]
    if not found:
        raise FileNotFoundError("; ".join([f"no images or videos found in {', '.join(map(str, paths))}", *notes]))
    for note in notes:
        log.warning("%s", note)
    return list(found.values())


def _is_media(name: str) -> bool:
    """Whether a file name's extension is an image's or a video's, and it is no temporary file of an output still
    being written or left by a killed run (``clip.mp4.partial.mp4``: counted with the other files instead)."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES and not is_partial_name(name)


def _top_level(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """The image and video files, the subfolders and the other files of ``folder``, each sorted, hidden ones
    (``._IMG_0001.JPG``) left out."""
    media, subfolders, others = [], [], []
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if entry.is_dir():
            subfolders.append(entry)
        else:
            (media if _is_media(entry.name) else others).append(entry)
    return media, subfolders, others


def _walk(folder: Path, excluded: str | None) -> tuple[list[Path], list[Path], list[Path], int]:
    """The image and video files below ``folder`` and its other files, each sorted, hidden files and folders and
    the folder ``excluded`` (a resolved path) left out; symbolic links to folders are not followed (a link to a
    parent would never end). Also what was left out without a word before: the links to folders holding images or
    videos, and how many images and videos the ``excluded`` folder (the output folder, inside this one) holds."""
    media, others, linked, in_excluded = [], [], [], 0
    for root, dirs, names in os.walk(folder):
        kept = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            path = os.path.join(root, d)
            if os.path.realpath(path) == excluded:
                in_excluded += sum(_is_media(n) for _, _, files in os.walk(path) for n in files)
            elif os.path.islink(path):
                if _holds_media(Path(path)):
                    linked.append(Path(path))
            else:
                kept.append(d)
        dirs[:] = kept
        for name in sorted(n for n in names if not n.startswith(".")):
            (media if _is_media(name) else others).append(Path(root) / name)
    return media, others, linked, in_excluded


def _left_out(files: list[Path]) -> str:
    """One line counting ``files`` (neither images nor videos) by extension, the most frequent first, with a hint
    where camera raw files are among them (they are not deblurred); "" for none."""
    if not files:
        return ""
    counts = collections.Counter(p.suffix.lower() for p in files)
    spelled: dict[str, str] = {}  # each extension as the first file has it (.CR3 on a camera card)
    for p in files:
        spelled.setdefault(p.suffix.lower(), p.suffix or "without an extension")
    named = [f"{n} {spelled[suffix]}" for suffix, n in counts.most_common(_NAMED_SUFFIXES)]
    more = ", ..." if len(counts) > _NAMED_SUFFIXES else ""
    raw = " (camera raw files are not deblurred: develop them to JPEG, TIFF or PNG first)" \
        if RAW_SUFFIXES & counts.keys() else ""
    raw += " (ROS bags: python -m runtime.rosbag)" if set(BAG_SUFFIXES) & counts.keys() else ""
    return f"left out {len(files)} file(s) that are not images or videos: {', '.join(named)}{more}{raw}"


def _holds_media(folder: Path, depth: int = 2) -> bool:
    """Whether ``folder`` holds an image or video file within ``depth`` levels (a camera card's
    DCIM/100CANON/IMG_0001.JPG); bounded, so that a large tree given by mistake is not walked whole."""
    try:
        entries = list(folder.iterdir())
    except OSError:  # a subfolder that cannot be listed: not searched either way
        return False
    if any(_is_media(p.name) and p.is_file() for p in entries):
        return True
    return depth > 1 and any(_holds_media(p, depth - 1) for p in entries if p.is_dir())


def output_name(source: Path) -> str:
    """The output file name for an input: the same name; a video's extension is the container it is written in
    (:func:`runtime.video.output_suffix`: its own for MP4, MOV and Matroska, else ``.mp4``)."""
    return Path(source.name).with_suffix(output_suffix(source)).name if is_video(source) else source.name


#: Archives a folder of photos is often sent as: refused by name, never read as a damaged image.
ARCHIVE_SUFFIXES = frozenset({".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar"})


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file a path reaches (links followed), or None if there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def output_refusals(inputs: list[Path], targets: list[Path]) -> dict[int, str]:
    """Inputs whose output is refused even with --force, by index, each with its one-line reason.

    Refused: two or more inputs mapping to one output (all of them: which one would win is arbitrary); an output
    that is the same file as any input (the same path, a symlink or a hard link). Collisions come first, in input
    order. The command line refuses the whole run on the first; ``serving.batch`` refuses these files only.
    """
    refusals: dict[int, str] = {}
    first: dict[Path, int] = {}
    for index, (source, target) in enumerate(zip(inputs, targets)):
        folder = target.parent.resolve()
        # the directory entry written (a link there is replaced); on a filesystem that ignores case (macOS's,
        # Windows', a FAT/exFAT card) IMG.JPG and img.jpg are one entry: the second would replace the first
        key = folder / (target.name.casefold() if case_insensitive(folder) else target.name)
        if key in first:
            reason = (f"{inputs[first[key]]} and {source} would both be written to {target}; deblur them "
                      "into different --output folders")
            refusals.setdefault(first[key], reason)
            refusals[index] = reason
        else:
            first[key] = index
    input_ids = {_file_id(p): p for p in inputs}
    input_paths = {real_path(p): p for p in inputs}
    for index, target in enumerate(targets):
        same = input_paths.get(real_path(target))
        if same is None and target.exists():
            same = input_ids.get(_file_id(target))
        if same is not None:
            refusals.setdefault(index, f"{target} is the same file as the input {same}; choose another --output "
                                       "folder (never overwritten, even with --force)")
        elif target.is_dir():
            refusals.setdefault(index, f"{target} is a folder, so the result of {inputs[index]} cannot be written "
                                       "under that name (not even with --force); choose another --output folder")
    given = {_entry(p): p for p in inputs}
    for index, target in enumerate(targets):  # the temporary name is cleared before it is written
        staged = given.get(_entry(partial_path(target, keep_suffix=is_video(target))))
        if staged is not None:
            refusals.setdefault(index, f"the input {staged} is at the temporary file name of {target}, which is "
                                       "cleared before it is written; rename it or choose another --output folder")
    return refusals


@functools.lru_cache(maxsize=64)
def case_insensitive(folder: Path) -> bool:
    """Whether the filesystem of ``folder`` (or of the nearest folder above it that exists) takes names that differ
    only by case as one: a file created in it is found under its name in upper case. False where nothing can be
    created there (the write itself then fails, in one line)."""
    import tempfile

    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".banet-case-") as probe:
            name = Path(probe.name)
            return (name.parent / name.name.upper()).exists()
    except OSError:
        return False


def _entry(path: Path) -> Path:
    """The directory entry ``path`` names (its folder resolved, a link at the name itself not followed)."""
    return path.parent.resolve() / path.name


def plan_outputs(inputs: list[Path], output_dir: Path, force: bool, names: list[Path] | None = None) -> list[Path]:
    """Where each input's result goes (``output_dir`` / its name in ``names``, from :func:`collect_named`; default
    :func:`output_name`), after refusing every unsafe plan before anything is written.

    Refused: any of :func:`output_refusals`, even with ``force``; an existing output without ``force``.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output {output_dir} is a file, not a folder; give a folder to write the "
                                 "results in (it is created if missing)")
    targets = [output_dir / name for name in (names or [output_name(p) for p in inputs])]
    refusals = output_refusals(inputs, targets)
    if refusals:
        raise FileExistsError(next(iter(refusals.values())))
    for target in targets:
        if os.path.lexists(target) and not force:  # a link to nothing too: refused up front, not after the work
            raise FileExistsError(f"{target} exists; pass --force to replace it")
    return targets


def side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    gap = np.full((before.shape[0], 8) + before.shape[2:], np.iinfo(before.dtype).max if
                  np.issubdtype(before.dtype, np.integer) else 1.0, before.dtype)
    return np.concatenate([before, gap, after], axis=1)


def process_video(deblurrer, source: Path, target: Path, with_side: bool, progress: bool = True,
                  replace: bool = True) -> int:
    """Deblur every frame of ``source`` into the video ``target`` with its sound and timing
    (:func:`runtime.video.transcode_video`); returns the frames written."""
    def deblur_frame(frame: np.ndarray) -> np.ndarray:
        out = deblurrer(frame)
        return side_by_side(frame, out) if with_side else out

    return transcode_video(source, target, deblur_frame, progress, replace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", type=path_arg, nargs="+", help="image files, video files or folders of them")
    parser.add_argument("--output", "-o", type=path_arg, default=Path("deblurred"), help="output folder")
    add_deblur_options(parser)
    return parser


def add_deblur_options(parser: argparse.ArgumentParser, **model_options) -> None:
    """The model, backend, precision and per-file options of this command line, shared by ``serving.batch`` so
    that both take the same options and produce the same files (``model_options``: its own --threads help and
    type, :func:`runtime.options.add_model_options`)."""
    add_model_options(parser, **model_options)
    parser.add_argument("--side-by-side", action="store_true", help="write input and result next to each other")
    parser.add_argument("--recursive", "-r", action="store_true",
                        help="read folders' subfolders too; outputs mirror the tree below each folder given "
                             "(DCIM/100CANON/IMG_0001.JPG -> OUTPUT/100CANON/IMG_0001.JPG); the output folder itself "
                             "is never read")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--strip-metadata", action="store_true",
                        help="write outputs without the input's colour profile, EXIF (capture time, camera, GPS), "
                             "XMP and IPTC (captions, keywords, rights), which outputs otherwise keep, orientation set "
                             "upright")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or per-file notes: errors, warnings and the final count only")


def deblur_file(deblurrer, source: Path, target: Path, with_side: bool, max_pixels: int,
                progress: bool = True, keep_metadata: bool = True, replace: bool = True) -> int:
    """Deblur one image or video file into ``target``, written whole or not at all; returns the frames written
    (1 for an image). Raises on any failure, for the caller to report (:func:`file_error`). ``progress``: a
    video's progress bar of frames. ``keep_metadata``: an image's colour profile and EXIF go into its output
    (:mod:`runtime.image_metadata`)."""
    try:  # a subfolder of the output folder, with --recursive
        make_folder(target.parent)  # removed at exit if this file fails and nothing else lands there
    except OSError as exc:
        raise OSError(f"cannot create the output folder {target.parent}: {exc.strerror or exc}") from None
    if is_video(source):
        return process_video(deblurrer, source, target, with_side, progress, replace)
    image, metadata = read_image_and_metadata(source, max_pixels=max_pixels, metadata=keep_metadata)
    out = deblurrer(image)
    write_image(target, side_by_side(image, out) if with_side else out, metadata, replace)
    return 1


def file_error(source: Path, exc: BaseException) -> str:
    """The one line for a file that failed: its path once (most messages start with it), then what went wrong;
    an error this module does not expect also names its type."""
    # a name with a line break in it (possible on Linux) is shown escaped: its first line was all that was left
    shown = str(source).replace("\r", "\\r").replace("\n", "\\n")
    text = str(exc).replace(str(source), shown)
    message = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    if not isinstance(exc, OSError | ValueError | RuntimeError):
        message = f"{type(exc).__name__}: {message}"
    return message if shown in message else f"{shown}: {message}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status: 0 all deblurred, 1 any failure, 2 a bad option, 130 interrupted
    (Ctrl-C), 143 or 129 terminated (SIGTERM, SIGHUP: :mod:`runtime.stop_signals`)."""
    from runtime.stop_signals import run_stoppable

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    return run_stoppable(lambda: _run(args), "the file in progress was not written")


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from runtime import Deblurrer

    quiet_opencv()
    try:
        named = collect_named(args.inputs, args.recursive, exclude=args.output)
        inputs = [source for source, _ in named]
        targets = plan_outputs(inputs, args.output, args.force, [name for _, name in named])
        try:  # removed at exit if nothing was written into it (a refused model or option left empty folders)
            make_folder(args.output)
        except OSError as exc:
            raise OSError(f"cannot create the output folder {args.output}: {exc.strerror or exc}") from None
        check_writable(args.output)  # before the model loads and the first file is deblurred for nothing
        deblurrer = Deblurrer(**deblurrer_options(args))
        log.info("model: %s on %s", deblurrer.model_path, deblurrer.backend.describe())
    except OptionError as exc:  # --tile 0, --tile-overlap -1: a usage error, as argparse's own (exit 2)
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a model, folder or file that cannot work: one line, never a traceback
        log.debug("setup failed", exc_info=True)
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    max_pixels = round(args.max_megapixels * 1e6)
    failures = 0
    with deblurrer:
        for source, target in tqdm(list(zip(inputs, targets)), desc="deblur", unit="file", disable=args.quiet):
            try:
                frames = deblur_file(deblurrer, source, target, args.side_by_side, max_pixels,
                                     progress=not args.quiet, keep_metadata=not args.strip_metadata,
                                     replace=args.force)  # without --force, never over a file written meanwhile
                if is_video(source):
                    log.info("%s -> %s (%d frames)", source, target, frames)
            except Exception as exc:  # one file's failure, whatever it is, never stops the others
                log.debug("%s failed", source, exc_info=True)
                failures += 1
                print(f"error: {file_error(source, exc)}", file=sys.stderr)
    print(printable(f"deblurred {len(inputs) - failures} of {len(inputs)} file(s) into {args.output}"))
    return 1 if failures else 0


def check_writable(folder: Path) -> None:
    """OSError in one line when no file can be created in ``folder`` (a read-only mount, a folder of someone else's):
    found by creating and removing an empty file, which is what writing an output does first."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".banet-write-check-"):
            pass
    except OSError as exc:
        raise OSError(f"cannot write into the output folder {folder}: {exc.strerror or exc}") from None


def printable(text: str) -> str:
    """``text`` as stdout can print it: a file name that is not valid in its encoding (bytes of another encoding,
    kept by Python as surrogates) escaped, instead of a UnicodeEncodeError after the work is done."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    escaped = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # b"\xff" -> "\\xff"
    return escaped.encode(encoding, "backslashreplace").decode(encoding)


if __name__ == "__main__":
    raise SystemExit(main())
