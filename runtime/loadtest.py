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
    parser.add_argument("--port", type=int, default=8010, help="HTTP port on 127.0.0.1 (gRPC +1, metrics +2)")
    args = parser.parse_args(argv)
    from export.parity import photo_batch
    from runtime import Deblurrer
    from runtime.serve import ServeConfig, start

    h, w = (int(v) for v in args.size.split("x"))
    images = [((photo_batch(1, h, w, seed=s)[0].transpose(1, 2, 0) + 0.5) * 255).round().astype(np.uint8)
              for s in range(4)]
    with Deblurrer(args.model) as deblurrer:
        expected = [deblurrer(img) for img in images]
        config = ServeConfig("127.0.0.1", args.port, args.port + 1, args.port + 2)
        triton = start(deblurrer, config)
        try:
            report = load_test(f"{config.host}:{config.http_port}", images, expected, args.requests, args.concurrency)
        finally:
            triton.stop()
    print(json.dumps(report, indent=2))
    return 0 if report["all_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
