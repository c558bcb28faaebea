"""Load-test the PyTriton server on loopback: bounded concurrency, latency percentiles, every answer checked.

    python -m runtime.loadtest --requests 64 --concurrency 4        # starts its own server on 127.0.0.1

Each response is compared with the direct ``Deblurrer`` output for the same image (dynamic batching may run a
request in a different batch, so equality is checked to within 1 grey level).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def photo_images(count: int, height: int, width: int) -> list[np.ndarray]:
    """``count`` real photos (scikit-image's samples) resized to HxW, uint8 BGR: what clients send."""
    import cv2
    import skimage.data
    from skimage.io import imread

    images = []
    for i in range(count):
        photo = imread(f"{skimage.data.data_dir}/{PHOTOS[i % len(PHOTOS)]}")[..., :3]
        images.append(cv2.resize(photo[..., ::-1], (width, height), interpolation=cv2.INTER_AREA))
    return images


def load_test(url: str, images: list[np.ndarray], expected: list[np.ndarray], requests: int, concurrency: int,
              model: str = "banet") -> dict:
    """Send ``requests`` requests (cycling through ``images``) from ``concurrency`` threads, one client each."""
    from runtime.client import DeblurClient

    local = threading.local()
    clients: list = []
    lock = threading.Lock()

    def client() -> DeblurClient:
        if not hasattr(local, "client"):
            local.client = DeblurClient(url, model)
            with lock:
                clients.append(local.client)
        return local.client

    def one(i: int) -> tuple[float, int]:
        image = images[i % len(images)]
        started = time.perf_counter()
        out = client()(image)
        latency = (time.perf_counter() - started) * 1e3
        diff = np.abs(out.astype(np.int16) - expected[i % len(images)].astype(np.int16))
        return latency, int(diff.max()) if diff.size else 0

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    for c in clients:
        c.close()
    latencies = np.array([r[0] for r in results])
    worst = max(r[1] for r in results)
    return {"requests": requests, "concurrency": concurrency, "wall_s": wall, "throughput_rps": requests / wall,
            "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "p99_ms": float(np.percentile(latencies, 99)), "max_abs_diff_vs_direct": worst,
            "all_match": worst <= 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint, ONNX or engine (default: embedded model)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (bounded)")
    parser.add_argument("--size", default="96x128", help="HxW of the test images")
    parser.add_argument("--port", type=int, default=8010, help="HTTP port on 127.0.0.1 (metrics on port + 2)")
    args = parser.parse_args(argv)
    from runtime import Deblurrer
    from runtime.serve import ServeConfig, start

    h, w = (int(v) for v in args.size.split("x"))
    images = photo_images(4, h, w)
    with Deblurrer(args.model) as deblurrer:
        expected = [deblurrer(img) for img in images]
        with start(deblurrer, ServeConfig("127.0.0.1", args.port, metrics_port=args.port + 2)) as server:
            report = load_test(server.url, images, expected, args.requests, args.concurrency)
    print(json.dumps(report, indent=2))
    return 0 if report["all_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
