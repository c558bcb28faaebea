"""A small client for ``python -m serving.serve`` (and the Triton ensemble): send an image, get it deblurred.

    python -m serving.client blurred.png --output sharp.png [--url 127.0.0.1:8000] [--model banet]

The server takes 8-bit colour images: a 16-bit image is converted to 8 bits (with a note; ``python -m runtime``
deblurs locally and keeps 16 bits), grey images are sent as three equal channels, an alpha channel is kept
aside and put back on the result. Any failure (server down, unknown model, unreadable or too small image, a
refusal from the server, a busy server's 503) is one line on stderr and exit code 1; bad options exit with code
2, Ctrl-C with 130, each in one line. An HTTP server is checked within --connect-timeout seconds before the image
is sent.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import warnings
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np

from banet.cli_types import path_arg
from runtime.images import DEFAULT_MAX_PIXELS, MIN_SIDE, quiet_opencv
from runtime.options import megapixels
from serving.request_rules import OneLineParser, number


class ClientError(RuntimeError):
    """Something the user can fix: the server is unreachable, the model unknown, the image unusable."""


class DeblurClient:
    """Wraps PyTriton's ``ModelClient`` (tritonclient underneath): ``client(image) -> deblurred image``.

    Args:
        url: ``host:port`` of the HTTP server (or ``grpc://host:port``).
        model: model name on the server.
        timeout_s: how long one inference may take.
        connect_timeout_s: how long to wait for the server and the model to answer before giving up.
    """

    def __init__(self, url: str = "127.0.0.1:8000", model: str = "banet", timeout_s: float = 120.0,
                 connect_timeout_s: float = 5.0) -> None:
        if not url.startswith("grpc://"):
            check_server(url, model, connect_timeout_s)
        from pytriton.client import ModelClient
        from pytriton.client.warnings import NotSupportedTimeoutWarning

        # A short connect timeout with a long inference timeout is deliberate; PyTriton warns about it each time.
        warnings.filterwarnings("ignore", category=NotSupportedTimeoutWarning)
        self._client = ModelClient(url, model, init_timeout_s=connect_timeout_s, inference_timeout_s=timeout_s)

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


def check_server(url: str, model: str, timeout_s: float) -> None:
    """Raise :class:`ClientError` within about ``timeout_s`` unless ``model`` is ready at the HTTP server ``url``
    and the server describes it as Triton does (KServe v2 JSON metadata): a web server that answers 200 to every
    path is not taken for one."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port or 8000
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", port, timeout=timeout_s)
    except (ValueError, http.client.InvalidURL):  # a bad port, an unclosed IPv6 bracket, a space in the host name
        raise ClientError(f"invalid server address {url!r}; expected host:port") from None
    model_path = f"/v2/models/{quote(model, safe='')}"
    try:
        status, body = _get(conn, f"{model_path}/ready")
        if status != 200:
            raise ClientError(f"model '{model}' is not available at {url}: {_server_message(body, status)}")
        status, body = _get(conn, model_path)
    except (OSError, http.client.HTTPException) as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ClientError(f"cannot reach a server at {url}: {reason} (is `python -m serving.serve` running?)") \
            from None
    finally:
        conn.close()
    metadata = _json(body) if status == 200 else None
    if not isinstance(metadata, dict) or "inputs" not in metadata:
        raise ClientError(f"the server at {url} is not a Triton server (`python -m serving.serve`): it answers "
                          f"{model_path} with HTTP {status} and no KServe v2 model metadata")


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def error_line(text: str) -> str:
    """One line for the user. Errors that bypass the server's front (gRPC) carry PyTriton's traceback: keep the
    tagged reason from it, or say where the details are."""
    from serving.request_rules import INTERNAL_ERROR, find_tag

    tagged = find_tag(text)
    if tagged:
        return tagged[1]
    return INTERNAL_ERROR if "Traceback" in text else " ".join(text.split())


def _server_message(body: bytes, status: int) -> str:
    answer = _json(body)
    return (answer.get("error") if isinstance(answer, dict) else None) or f"HTTP {status}"


def prepare_image(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """A decoded file -> (HxWx3 uint8 BGR for the server, alpha plane or None, notes for the user)."""
    notes = []
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        notes.append("16-bit image converted to 8-bit for the server (python -m runtime keeps 16 bits)")
    elif image.dtype != np.uint8:
        raise ClientError(f"{image.dtype} images are not supported; save it as an 8- or 16-bit image")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ClientError(f"expected a grey, colour or colour+alpha image, got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ClientError(f"image of {image.shape[0]}x{image.shape[1]} pixels is too small to deblur "
                          f"(at least {MIN_SIDE}x{MIN_SIDE})")
    alpha = image[..., 3] if image.shape[2] == 4 else None
    return np.ascontiguousarray(image[..., :3]), alpha, notes


def deblur_file(args: argparse.Namespace) -> None:
    """Read, send, write; raises ClientError/ImageReadError/PyTriton client errors for :func:`main`."""
    from runtime.images import read_image_and_metadata, write_image

    check_output(args.output, args.image, args.force)
    quiet_opencv(silent=True)
    pixels, metadata = read_image_and_metadata(args.image, max_pixels=round(args.max_megapixels * 1e6),
                                               metadata=not args.strip_metadata)
    image, alpha, notes = prepare_image(pixels)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    with DeblurClient(args.url, args.model, timeout_s=args.timeout, connect_timeout_s=args.connect_timeout) as client:
        result = client(image)
    if alpha is not None:
        result = np.concatenate([result, alpha[..., None]], axis=2)
    write_image(args.output, result, metadata)


def check_output(output: Path, image: Path, force: bool) -> None:
    """Refuse, before anything is sent, an output that is the input (a symbolic or hard link to it included, even
    with ``force``), a folder, (without ``force``) an existing file, or a name whose format cannot be written here
    (a small image is encoded in it: the same check the result will meet, in one line)."""
    from runtime.images import encode_image

    if output.resolve() == image.resolve() or (output.exists() and image.exists() and output.samefile(image)):
        raise ClientError("--output would overwrite the input")
    if output.is_dir():
        raise ClientError(f"--output {output} is a folder; give a file name")
    if output.exists() and not force:
        raise ClientError(f"{output} exists; pass --force to replace it")
    encode_image(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8), output.suffix or ".png", output)


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m serving.client", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=path_arg, help="blurred image file (PNG, JPEG, ...; 8 or 16 bit)")
    parser.add_argument("--output", type=path_arg, required=True, help="where to write the deblurred image (8 bit)")
    parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    parser.add_argument("--strip-metadata", action="store_true",
                        help="write the output without the input's colour profile and EXIF (kept in PNG and JPEG)")
    parser.add_argument("--url", default="127.0.0.1:8000",
                        help="server address: host:port of its HTTP port (default 127.0.0.1:8000), or "
                             "grpc://host:port where the server opened gRPC")
    parser.add_argument("--model", default="banet", help="model name on the server (default banet)")
    seconds = number(float, 0, 24 * 3600, low_open=True)
    parser.add_argument("--connect-timeout", type=seconds, default=5.0,
                        help="seconds to wait for the server and model before giving up (default 5)")
    parser.add_argument("--timeout", type=seconds, default=120.0,
                        help="seconds one image may take on the server (default 120)")
    parser.add_argument("--max-megapixels", type=megapixels, default=DEFAULT_MAX_PIXELS / 1e6,
                        help="refuse images larger than this from their header, before decoding (decompression "
                             "bombs); default %(default)g (the server has its own limit)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import logging

    from pytriton.client.exceptions import PyTritonClientError

    # its failures are this command's one error line: PyTriton's logger printed a timeout a second time above it
    logging.getLogger("pytriton").setLevel(logging.CRITICAL)

    try:
        deblur_file(args)
    except (ClientError, OSError, PyTritonClientError) as exc:  # OSError includes ImageReadError
        print(f"error: {error_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
