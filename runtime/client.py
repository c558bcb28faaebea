"""A small client for ``python -m runtime.serve`` (and the Triton ensemble): send an image, get it deblurred.

    python -m runtime.client blurred.png --output sharp.png [--url 127.0.0.1:8000] [--model banet]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


class DeblurClient:
    """Wraps PyTriton's ``ModelClient`` (tritonclient underneath): ``client(image) -> deblurred image``."""

    def __init__(self, url: str = "127.0.0.1:8000", model: str = "banet", timeout_s: float = 120.0) -> None:
        from pytriton.client import ModelClient

        self._client = ModelClient(url, model, init_timeout_s=timeout_s, inference_timeout_s=timeout_s)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError("the server takes uint8 HxWx3 BGR images")
        return self._client.infer_sample(image=image)["deblurred"]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DeblurClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path, help="blurred image file")
    parser.add_argument("--output", type=Path, required=True, help="where to write the deblurred image")
    parser.add_argument("--url", default="127.0.0.1:8000", help="server address (HTTP port, or grpc://host:8001)")
    parser.add_argument("--model", default="banet", help="model name on the server")
    args = parser.parse_args(argv)
    from runtime.images import read_image, write_image

    if args.output.resolve() == args.image.resolve():
        print("error: --output would overwrite the input", file=sys.stderr)
        return 1
    image = read_image(args.image)
    with DeblurClient(args.url, args.model) as client:
        write_image(args.output, client(image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, 2)))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
