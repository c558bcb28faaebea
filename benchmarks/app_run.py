"""What an app that links only ONNX Runtime does with an app graph (export/to_app.py), as a program to time.

    python -m benchmarks.app_run engines/banet_default_app.onnx photo.png sharp.png [--threads N]

Decode the photo (Pillow), run the app graph on ONNX Runtime's CPU provider with its default session options (as
an app would: no banet-deploy code in the loop), check ``finite``, encode the result. ``benchmarks.end_to_end
--app`` runs it in a fresh process per case for wall time and peak memory, next to ``python -m runtime``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", type=Path, help="app graph (.onnx or .ort) made by export/to_app.py")
    parser.add_argument("photo", type=Path, help="photo to deblur (any format Pillow reads)")
    parser.add_argument("output", type=Path, help="where to write the deblurred photo (PNG)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="ONNX Runtime intra-op threads (default 0: ONNX Runtime's choice, all cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    for path, what in ((args.app, "app graph"), (args.photo, "photo")):
        if not path.is_file():
            print(f"error: {path}: {what} not found" + ("; make it with python export/to_app.py"
                                                         if what == "app graph" else ""), file=sys.stderr)
            return 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.app), options, providers=["CPUExecutionProvider"])
    with Image.open(args.photo) as image:
        rgb = np.asarray(image.convert("RGB"))[None]
    deblurred, finite = session.run(["deblurred", "finite"], {"image": rgb})
    if not finite.all():
        print("error: the network overflowed (finite is false): no image written", file=sys.stderr)
        return 1
    Image.fromarray(deblurred[0]).save(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
