"""What an app that links only ONNX Runtime does with an app graph (export/to_app.py), as a program to time.

    python -m benchmarks.app_run engines/banet_default_app.onnx photo.png sharp.png [--threads N]

Decode the photo (Pillow), run the app graph on ONNX Runtime's CPU provider with its default session options (as
an app would: no banet-deploy code in the loop), check ``finite``, encode the result. ``benchmarks.end_to_end
--app`` runs it in a fresh process per case for wall time and peak memory, next to ``python -m runtime``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from banet.cli_types import path_arg, threads
from runtime.stop_signals import stoppable, stopped_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", type=path_arg, help="app graph (.onnx or .ort) made by export/to_app.py")
    parser.add_argument("photo", type=path_arg, help="photo to deblur (any format Pillow reads)")
    parser.add_argument("output", type=path_arg, help="where to write the deblurred photo (PNG)")
    parser.add_argument("--threads", type=threads(0), default=0, metavar="N",
                        help="ONNX Runtime intra-op threads (default 0: ONNX Runtime's choice, all cores)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    return parser


def image_format(path: Path) -> str:
    """Pillow's format name for the output's extension (``PNG`` for ``.png``); ValueError for one it cannot write."""
    from PIL import Image

    name = Image.registered_extensions().get(path.suffix.lower())
    if name is None or name not in Image.SAVE:
        raise ValueError(f"{path}: {path.suffix or 'no extension'} is not an image format Pillow writes; "
                         "name the output .png")
    return name


@stoppable
def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 written, 1 a file that cannot be read, run or written (one ``error:``
    line, nothing written), 2 a bad option, 130 interrupted."""
    args = build_parser().parse_args(argv)
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from banet.errors import first_line
    from banet.outputs import check_output, write_atomic, write_error

    for path, what in ((args.app, "app graph"), (args.photo, "photo")):
        if not path.is_file():
            print(f"error: {path}: {what} not found" + ("; make it with python export/to_app.py"
                                                         if what == "app graph" else ""), file=sys.stderr)
            return 1
    try:  # before any work: never written over the app graph or the photo (even with --force), nor another file
        check_output(args.output, force=args.force, error=ValueError, suffix=".png",
                     inputs={"the app graph": args.app, "the photo": args.photo})
        fmt = image_format(args.output)
    except ValueError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        try:
            session = ort.InferenceSession(str(args.app), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's own exception types: not a model, an invalid graph
            print(f"error: {args.app}: not an app graph ONNX Runtime can load ({first_line(exc)})", file=sys.stderr)
            return 1
        try:
            with Image.open(args.photo) as image:
                rgb = np.asarray(image.convert("RGB"))[None]
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # not an image, cut short, too large
            print(f"error: {args.photo}: cannot read it as a photo ({first_line(exc)})", file=sys.stderr)
            return 1
        deblurred, finite = session.run(["deblurred", "finite"], {"image": rgb})
        if not finite.all():
            print("error: the network overflowed (finite is false): no image written", file=sys.stderr)
            return 1
        buffer = io.BytesIO()
        Image.fromarray(deblurred[0]).save(buffer, format=fmt)
        try:  # whole or not at all: Ctrl-C or a full disk leaves no half image under the output's name
            write_atomic(args.output, buffer.getvalue())
        except OSError as exc:
            print(f"error: {write_error(exc, args.output)}; nothing written", file=sys.stderr)
            return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (@stoppable)
        return stopped_line(exc, "no image written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
