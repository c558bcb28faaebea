"""Load-test a server on loopback: bounded concurrency, latency percentiles, every answer checked.

    python -m serving.loadtest --requests 64 --concurrency 4        # starts its own PyTriton server on 127.0.0.1
    python -m serving.loadtest --target triton --model engines/banet_default.onnx
        # writes a Triton repository (python flavour) for the ONNX model, serves it with the bundled tritonserver
        # (python -m serving.triton_server): concurrency 1, 4 and 8, dynamic batching on and off; results in
        # benchmarks/results/loadtest_triton_<machine>_<date>.{json,md}

Each response is compared with the direct ``Deblurrer`` output for the same image (dynamic batching may run a
request in a different batch, so equality is checked to within 1 grey level).

    python -m serving.loadtest --burst 6 --size 1000x1000      # the overload check: see :func:`burst`

``--burst N`` starts ``python -m serving.serve`` in its own process, sends N concurrent KServe JSON requests of
--size, then one small request, and reports each status (200 or 503), latency and Retry-After, how soon the small
request was answered, and the server process's memory (VmRSS) before, at its peak and after.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from banet.cli_types import number, path_arg, threads
from banet.errors import first_line
from banet.outputs import check_output, write_atomic, write_together
from banet.shapes import MIN_SIDE, parse_hw
from banet.triton_marker import DEFAULT_MAX_PIXELS

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
    from serving.client import DeblurClient

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


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc), or NaN if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _json_body(image: np.ndarray) -> bytes:
    """A KServe v2 JSON inference request for one HxWx3 image, as plain HTTP clients (curl, requests) send it."""
    return json.dumps({"inputs": [{"name": "image", "shape": [1, *image.shape], "datatype": "UINT8",
                                   "data": image.ravel().tolist()}]}).encode()


def _post(port: int, body: bytes, timeout: float | None) -> dict:
    """POST one inference request; status (None when the client gave up), seconds and Retry-After."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v2/models/banet/infer", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        status, retry_after = response.status, response.getheader("Retry-After")
    except TimeoutError:
        status, retry_after = None, None  # the client hangs up, as an impatient one does
    except (OSError, http.client.HTTPException) as exc:  # refused or cut off (e.g. over the front's connections)
        status, retry_after = f"connection failed: {type(exc).__name__}", None
    finally:
        conn.close()
    return {"status": status, "seconds": round(time.perf_counter() - started, 2), "retry_after": retry_after}


#: serving.serve options a --burst run sets itself (--server-args may not).
_BURST_OWNS = ("--host", "--http-port", "--grpc-port", "--metrics-port", "--no-metrics")


def burst(server_args: list[str], count: int, size: tuple[int, int], client_timeout: float | None = None,
          small: tuple[int, int] = (64, 64)) -> dict:
    """Start ``python -m serving.serve`` (its own process, so its memory is its own), send ``count`` concurrent
    JSON requests of ``size`` at once, then one ``small`` request once all of them are answered (or their
    clients gave up after ``client_timeout``); stop the server with SIGTERM."""
    from serving.serve import free_port

    port = free_port()
    command = [sys.executable, "-m", "serving.serve", "--http-port", str(port), "--no-metrics", *server_args]
    # The server's output goes to a file, not a pipe nobody reads while the burst runs (a full pipe blocks it).
    server_log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT, text=True)
    peak = [0.0]
    done = threading.Event()
    try:
        try:
            _wait_ready(proc, port)
        except RuntimeError as exc:
            server_log.seek(0)
            tail = " ".join(server_log.read().split()[-60:])
            raise RuntimeError(f"{exc}; its output ends: {tail}") from None
        time.sleep(1.0)
        before = rss_mb(proc.pid)

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], rss_mb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        images = photo_images(count, *size)
        bodies = [_json_body(image) for image in images]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            answers = list(pool.map(lambda body: _post(port, body, client_timeout), bodies))
        burst_s = time.perf_counter() - started
        del bodies
        small_answer = _post(port, _json_body(photo_images(1, *small)[0]), 600)
        time.sleep(2.0)
        after = rss_mb(proc.pid)
        done.set()
        sampler.join()
    finally:
        done.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server_log.seek(0)
        output = server_log.read()
        server_log.close()
    return {"command": " ".join(command[1:]), "requests": count, "size": f"{size[0]}x{size[1]}",
            "client_timeout_s": client_timeout, "answers": answers, "burst_s": round(burst_s, 1),
            "small_request": small_answer, "rss_mb": {"before": round(before), "peak": round(max(peak[0], after)),
                                                      "after": round(after)},
            "server_exit_code": proc.returncode, "server_output": output.splitlines()}


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


#: Most client threads (``--concurrency``): a loopback load test gains nothing from more.
MAX_CONCURRENCY = 256


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"expected numbers 1 to {MAX_CONCURRENCY}, got {text!r}")
    return values


def _size(text: str) -> tuple[int, int]:
    """``HxW``, each side at least :data:`MIN_SIDE`, at most the server's default pixel limit in all (a larger
    image would be refused by the server; 100000x100000 took 30 GB before the server even started)."""
    h, w = parse_hw(text)  # its ShapeError is an argparse.ArgumentTypeError
    if min(h, w) < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"images must be at least {MIN_SIDE}x{MIN_SIDE}, got {text!r}")
    if h * w > DEFAULT_MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"{text} is {h * w / 1e6:.10g} megapixels, over the server's default limit "
                                         f"of {DEFAULT_MAX_PIXELS / 1e6:g}")
    return h, w


def _switches(text: str) -> list[bool]:
    words = text.split(",")
    if not words or any(w not in ("on", "off") for w in words):
        raise argparse.ArgumentTypeError(f"expected on, off or on,off; got {text!r}")
    return [w == "on" for w in words]


def triton_sweep(onnx: Path, images: list[np.ndarray], expected: list[np.ndarray], requests: int,
                 concurrencies: list[int], batching: list[bool], threads: int, max_batch: int) -> list[dict]:
    """For each batching setting: write a repository (python flavour), start the bundled tritonserver on it,
    run :func:`load_test` at every concurrency, stop the server."""
    from export.triton_repo import write_repository
    from serving.triton_server import start

    rows = []
    for dynamic in batching:
        with tempfile.TemporaryDirectory(prefix="banet_loadtest_") as folder:
            repo = Path(folder) / "repo"
            write_repository(onnx, repo, max_batch=max_batch, dynamic_batching=dynamic, threads=threads)
            with start(repo, http_port=0, grpc_port=0) as server:
                for concurrency in concurrencies:
                    load_test(server.url, images, expected, max(requests, concurrency), concurrency)  # warm-up
                    report = load_test(server.url, images, expected, requests, concurrency)
                    rows.append({"server": "tritonserver (bundled, python flavour)",
                                 "dynamic_batching": dynamic, **report})
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| dynamic batching | concurrency | requests | throughput (req/s) | p50 ms | p95 ms | p99 ms | "
             "max diff vs Deblurrer |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        batching = {True: "on", False: "off"}.get(r.get("dynamic_batching"), "-")
        lines.append(f"| {batching} | {r['concurrency']} | {r['requests']} | {r['throughput_rps']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_abs_diff_vs_direct']} |")
    return "\n".join(lines)


def default_output(target: str) -> Path:
    from banet.machine import results_stem

    return Path("benchmarks") / "results" / f"{results_stem(f'loadtest_{target}')}.json"


def main(argv: list[str] | None = None) -> int:
    """Ctrl-C, SIGTERM or SIGHUP: the server a run started is stopped (its ``finally``), one line, 130/143/129;
    before, SIGTERM (``timeout``) left a --burst run's serving.serve and its tritonserver running, orphaned."""
    from runtime.stop_signals import run_stoppable

    return run_stoppable(lambda: _main(argv), "the server it started was stopped; no results written")


def _main(argv: list[str] | None) -> int:
    from serving.request_rules import OneLineParser  # refusals in one line, exit code 2

    parser = OneLineParser(prog="python -m serving.loadtest", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("pytriton", "triton"), default="pytriton",
                        help="pytriton: python -m serving.serve; triton: the bundled tritonserver on a repository")
    parser.add_argument("--model", default=None,
                        help="checkpoint, ONNX or engine (default: embedded model); the triton target needs an ONNX "
                             "file (default: engines/banet_default.onnx)")
    parser.add_argument("--requests", type=number(int, 1, 1_000_000), default=64,
                        help="requests per concurrency setting, 1 to 1000000 (default %(default)s)")
    parser.add_argument("--concurrency", type=_ints, default=None,
                        help="client threads, e.g. 4 or 1,4,8 (default: 4; 1,4,8 for the triton target)")
    parser.add_argument("--batching", type=_switches, default=[True, False],
                        help="triton target: the network model's dynamic batching, on, off or on,off (default)")
    parser.add_argument("--threads", type=threads(low=0), default=0,
                        help="triton target: ONNX Runtime threads of the server's network model (0: all cores)")
    parser.add_argument("--size", type=_size, default=(96, 128), metavar="HxW",
                        help="size of the test images (default 96x128)")
    parser.add_argument("--port", type=number(int, 1, 65535 - 2), default=8010,
                        help="pytriton target: HTTP port on 127.0.0.1, 1 to 65533 (metrics on port + 2)")
    parser.add_argument("--burst", type=number(int, 1, 256), default=None, metavar="N",
                        help="overload check: N concurrent JSON requests of --size at a serving.serve process")
    parser.add_argument("--client-timeout", type=number(float, 0, low_open=True), default=None,
                        help="--burst: seconds a client waits before it hangs up (default: it waits)")
    parser.add_argument("--server-args", default="",
                        help="--burst: more serving.serve options, e.g. '--deadline-s 60 --queue-size 4'")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="results JSON (+ .md table); default: benchmarks/results/loadtest_<target>_<machine>_"
                             "<date>.json (from the current folder) when --concurrency lists several values, else none")
    parser.add_argument("--force", action="store_true",
                        help="replace results files already there (without it an existing one stops the command "
                             "before any work: benchmarks/results holds committed results)")
    args = parser.parse_args(argv)
    if args.burst is None and args.concurrency is None:
        args.concurrency = [1, 4, 8] if args.target == "triton" else [4]
    output = args.output if args.burst is not None else (
        args.output or (default_output(args.target) if len(args.concurrency) > 1 else None))
    if output is not None:
        try:  # before any work: a committed results file is replaced only with --force
            for path in (output, output.with_suffix(".md")) if args.burst is None else (output,):
                check_output(path, force=args.force, error=FileExistsError, suffix=path.suffix, option="--output")
        except (FileExistsError, OSError) as exc:
            print(f"error: {first_line(exc)}", file=sys.stderr)
            return 1
    owned = sorted({a.split("=")[0] for a in args.server_args.split()} & set(_BURST_OWNS))
    if owned:  # before: the server listened where told, and this waited 180 s on its own port
        print(f"error: --server-args may not set {', '.join(owned)}: the load test picks the server's address "
              "and ports itself", file=sys.stderr)
        return 2
    if args.burst is not None:
        model = ["--model", args.model] if args.model else []
        try:
            report = burst(model + args.server_args.split(), args.burst, args.size, args.client_timeout)
        except RuntimeError as exc:  # the server did not start: its own error line is in the message
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        text = json.dumps(report, indent=2)
        if output is not None:
            write_atomic(output, (text + "\n").encode())
        print(text)
        return 0
    from runtime import Deblurrer

    h, w = args.size
    images = photo_images(4, h, w)
    rows: list[dict] = []
    if args.target == "triton":
        from banet.artifacts import onnx_path

        onnx = Path(args.model) if args.model else onnx_path("banet_default")
        if onnx.suffix != ".onnx" or not onnx.is_file():
            print(f"error: the triton target serves an ONNX file and {onnx} is none; export one with "
                  "python export/to_onnx.py", file=sys.stderr)
            return 1
        with Deblurrer(onnx, backend="onnxruntime") as deblurrer:
            expected = [deblurrer(img) for img in images]
        from serving.triton_server import TritonLaunchError

        try:
            rows = triton_sweep(onnx, images, expected, args.requests, args.concurrency, args.batching,
                                args.threads, max(args.concurrency))
        except TritonLaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        import logging

        from serving.serve import ServeConfig, ServeError, start

        logging.getLogger("pytriton").setLevel(logging.WARNING)
        with Deblurrer(args.model) as deblurrer, tempfile.TemporaryDirectory(prefix="banet_loadtest_") as folder:
            expected = [deblurrer(img) for img in images]
            config = ServeConfig("127.0.0.1", args.port, metrics_port=args.port + 2,
                                 triton_log=Path(folder) / "triton.log")  # Triton's log lines stay off the console
            try:
                server = start(deblurrer, config)
            except ServeError as exc:  # a busy port: one line (it was a traceback), naming this command's option
                message = str(exc).replace("pick another with --metrics-port", "pick another --port (the metrics "
                                           "port is --port + 2)")
                print(f"error: {message}", file=sys.stderr)
                return 1
            with server:
                for concurrency in args.concurrency:
                    rows.append({"server": "python -m serving.serve (PyTriton)",
                                 **load_test(server.url, images, expected, args.requests, concurrency)})
    if output is not None:
        from banet.machine import cpu_name

        result = {"machine": cpu_name(), "cpus": os.cpu_count(), "date": str(datetime.date.today()),
                  "target": args.target, "model": str(args.model or ""), "image_size": f"{h}x{w}",
                  "server_threads": args.threads if args.target == "triton" else None,
                  "command": "python -m serving.loadtest " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "rows": rows}
        write_together({output: (json.dumps(result, indent=2) + "\n").encode(),  # the pair whole or not at all
                        output.with_suffix(".md"): (f"Load test, {args.target}, {cpu_name()} ({os.cpu_count()} "
                                                    f"CPUs), {h}x{w} images\n\n{table(rows)}\n").encode()})
        print(f"wrote {output} and {output.with_suffix('.md')}")
    print(json.dumps(rows[0], indent=2) if len(rows) == 1 else table(rows))
    return 0 if all(r["all_match"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
