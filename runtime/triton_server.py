"""Start the ``tritonserver`` that PyTriton bundles on a model repository written by ``export/to_triton.py``.

    python -m runtime.triton_server model_repository             # HTTP 8000, gRPC 8001 on 127.0.0.1; Ctrl-C stops

The bundled server (Triton 2.5x) has the Python backend only: serve repositories of the ``python`` flavour
(``export/to_triton.py --flavour python``, the default). What the launcher sets up, as PyTriton does for its own
server: a backend directory holding the Python backend and the stub built for this Python version, the
server's shared libraries on ``LD_LIBRARY_PATH``, and this interpreter's environment first on ``PATH`` (the stub
runs models with it, so it needs numpy and onnxruntime). Readiness is the server's own ``/v2/health/ready``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 25
_LOAD_FAILURE = re.compile(r"\] \"(failed to load '[^']+' version .*?)\"?$")


class TritonLaunchError(RuntimeError):
    """The server could not be found, started or made ready (the message is meant for the user as is)."""


@dataclass(frozen=True)
class BundledServer:
    """Where PyTriton's copy of Triton lies."""

    binary: Path
    python_backend: Path  # folder with libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python version
    libs: Path  # shared libraries the binary needs


def find_bundled() -> BundledServer:
    """PyTriton's ``tritonserver``, Python backend and stub for this interpreter, without importing PyTriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonLaunchError("tritonserver not found: it comes with PyTriton, install the serve extra "
                                "(pip install 'banet-deploy[serve]') or pass --tritonserver PATH")
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    libs = next((p for p in (root.parent / "nvidia_pytriton.libs", dist / "external_libs") if p.is_dir()),
                root.parent / "nvidia_pytriton.libs")
    server = BundledServer(dist / "bin" / "tritonserver", dist / "backends" / "python", stub, libs)
    if not server.binary.is_file():
        raise TritonLaunchError(f"PyTriton at {root} has no tritonserver binary; reinstall the serve extra "
                                "(pip install --force-reinstall nvidia-pytriton)")
    if not stub.is_file():
        raise TritonLaunchError(f"PyTriton has no Python backend stub for Python {version}; run the launcher with "
                                "a Python version PyTriton supports (3.8 to 3.13)")
    return server


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(host: str, port: int, what: str) -> None:
    """Refuse, with one line, a port that something else already holds."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise TritonLaunchError(f"{what} port {host}:{port} is busy ({exc.strerror}); pick another with "
                                    f"--{what.lower()}-port") from None


def http_get(host: str, port: int, path: str, timeout: float = 2.0, method: str = "GET") -> tuple[int, bytes]:
    """(status, body) of one request to the server's HTTP endpoint."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class TritonServer:
    """A running ``tritonserver`` process; :meth:`stop` (or leaving the ``with`` block) ends it."""

    process: subprocess.Popen
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int | None
    log_path: Path
    workdir: Path | None  # temporary backend folder and default log, removed by stop()
    shm_prefix: str
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        """host:port of the HTTP endpoint (what ``tritonclient.http`` and ``runtime.client`` take)."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def load_failures(self) -> list[str]:
        """Triton's "failed to load" lines of the log, without the log prefix: why models are unavailable."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            match = _LOAD_FAILURE.search(line)
            if match:
                reason = match.group(1).split("\\n")[0].replace('\\"', '"')  # first line of a Python error
                if "unable to find backend library" in reason:
                    reason += (" (the bundled server has the Python backend only: write the repository with "
                               "export/to_triton.py --flavour python, or serve it with NVIDIA's server container)")
                found.append(reason)
        return found

    def models(self) -> list[dict]:
        """The repository index: name, version, state (and reason) of every model."""
        status, body = http_get(self.host, self.http_port, "/v2/repository/index", method="POST")
        return json.loads(body) if status == 200 else []

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll ``/v2/health/ready`` until the server (strict readiness: every model) is ready.

        Raises :class:`TritonLaunchError` with the tail of the server's log if it exits or times out first.
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self._cleanup()
                why = "".join(f"\n  {line}" for line in self.load_failures())
                raise TritonLaunchError(f"tritonserver exited with code {code} before it was ready{why}\n"
                                        f"the end of its log ({self.log_path}):\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(self.host, self.http_port, "/v2/health/ready")[0] == 200:
                    return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TritonLaunchError(f"tritonserver was not ready after {timeout:.0f} s; the end of its log "
                                        f"({self.log_path}):\n{tail}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the server cleanly (SIGTERM: Triton finishes in-flight requests), SIGKILL after ``timeout``.

        Returns the exit code; safe to call twice.
        """
        with self._lock:
            if self._stopped:
                return self.process.returncode
            self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop within %.0f s; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):  # not reaped yet: the group (its stubs) is ours
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._cleanup()
        log.info("tritonserver stopped (exit code %s)", self.process.returncode)
        return self.process.returncode

    def _cleanup(self) -> None:
        """Remove our shared-memory regions and the temporary folder (the log of a failed start stays)."""
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()
        if self.workdir is not None and self.workdir.exists():
            keep = self.log_path.parent == self.workdir and self.process.returncode not in (0, None)
            if keep:  # the log of a failed run stays readable; only the backend folder goes
                shutil.rmtree(self.workdir / "backends", ignore_errors=True)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _check_repository(repository: Path, bundled: bool) -> None:
    """Refuse a missing or empty repository; for the bundled server, check what its models need up front."""
    if not repository.is_dir():
        raise TritonLaunchError(f"model repository {repository} not found; write one with export/to_triton.py")
    configs = {p.parent.name: p.read_text(errors="replace") for p in sorted(repository.glob("*/config.pbtxt"))}
    if not configs:
        raise TritonLaunchError(f"{repository} holds no model (no <model>/config.pbtxt); write one with "
                                "export/to_triton.py")
    if not bundled:
        return
    foreign = [name for name, text in configs.items()
               if any(f'platform: "{kind}"' in text for kind in ("onnxruntime_onnx", "tensorrt_plan"))]
    if foreign:
        log.warning("models %s need Triton's onnxruntime/tensorrt backends, which the bundled server lacks; "
                    "write the repository with export/to_triton.py --flavour python, or serve it with NVIDIA's "
                    "server container", foreign)
    python_models = [name for name, text in configs.items() if 'backend: "python"' in text]
    needs = {"numpy": python_models,
             "onnxruntime": [m for m in python_models if any(repository.glob(f"{m}/*/model.onnx"))]}
    missing = {module: models for module, models in needs.items() if models and importlib.util.find_spec(module)
               is None}
    if missing:
        what = "; ".join(f"{module} (for {', '.join(models)})" for module, models in missing.items())
        raise TritonLaunchError(f"the bundled server runs Python models with this Python ({sys.executable}), which "
                                f"lacks {what}: pip install 'banet-deploy[cpu,serve]'")


def start(repository: str | Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
          metrics_port: int | None = None, tritonserver: str | Path | None = None, log_path: str | Path | None = None,
          timeout: float = 120.0, log_verbose: int = 0, extra_args: tuple[str, ...] = ()) -> TritonServer:
    """Start ``tritonserver`` on ``repository`` and wait until it is ready; port 0 picks a free port.

    ``tritonserver``: another server binary (its own backends are used); default: PyTriton's bundled one, set
    up as the module docstring says. ``metrics_port`` None turns metrics off.
    """
    repository = Path(repository).resolve()
    bundled = find_bundled() if tritonserver is None else None
    _check_repository(repository, bundled is not None)
    if tritonserver is not None and not Path(tritonserver).is_file():
        raise TritonLaunchError(f"tritonserver {tritonserver} not found")
    ports: dict[str, int] = {}
    for what, port in (("HTTP", http_port), ("gRPC", grpc_port), ("metrics", metrics_port)):
        if port is None:
            continue
        while not port or port in ports.values():  # 0: a free port, distinct from the ones already picked
            port = free_port(host)
        check_port(host, port, what)
        ports[what] = port
    workdir = Path(tempfile.mkdtemp(prefix="banet_triton_"))
    shm_prefix = f"banet_triton_{uuid.uuid4().hex[:12]}_"
    env = os.environ.copy()
    command: list[str]
    if bundled is not None:
        backends = workdir / "backends" / "python"
        backends.mkdir(parents=True)
        for source in (bundled.python_backend / "libtriton_python.so",
                       bundled.python_backend / "triton_python_backend_utils.py", bundled.stub):
            (backends / source.name).symlink_to(source)
        binary = bundled.binary
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [env.get("LD_LIBRARY_PATH"), str(bundled.libs)]))
        env["PATH"] = f"{Path(sys.exec_prefix) / 'bin'}:{env.get('PATH', '')}"  # the stub's Python environment
        command = [str(binary), f"--backend-directory={workdir / 'backends'}"]
    else:
        binary = Path(tritonserver)
        command = [str(binary)]
    command += [f"--model-repository={repository}", f"--http-address={host}", f"--http-port={ports['HTTP']}",
                f"--grpc-address={host}", f"--grpc-port={ports['gRPC']}", "--exit-timeout-secs=10",
                f"--log-verbose={log_verbose}", f"--backend-config=python,shm-region-prefix-name={shm_prefix}"]
    if "metrics" in ports:
        command += [f"--metrics-address={host}", f"--metrics-port={ports['metrics']}"]
    else:
        command += ["--allow-metrics=false"]
    command += list(extra_args)
    log_path = Path(log_path) if log_path is not None else workdir / "tritonserver.log"
    log.info("starting %s", " ".join(command))
    with open(log_path, "wb") as log_file:
        try:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise TritonLaunchError(f"cannot run {binary}: {exc.strerror}") from None
    server = TritonServer(process, host, ports["HTTP"], ports["gRPC"], ports.get("metrics"), log_path, workdir,
                          shm_prefix)
    try:
        server.wait_ready(timeout)
    except BaseException:  # Ctrl-C while waiting included: never leave a server running in its own session
        server.stop()
        raise
    log.info("tritonserver ready: HTTP %s, gRPC %s", server.url, server.grpc_url)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.triton_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="model repository written by export/to_triton.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (0: any free port)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (0: any free port)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus metrics port (default: metrics off)")
    parser.add_argument("--tritonserver", type=Path, default=None,
                        help="another tritonserver binary (default: the one PyTriton bundles)")
    parser.add_argument("--log", type=Path, default=None, help="write the server's log here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        server = start(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
                       args.tritonserver, args.log, args.timeout, args.log_verbose)
    except TritonLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted before the server was ready; stopped it", file=sys.stderr)
        return 130
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    states = ", ".join(f"{m['name']} {m.get('state', '?')}" for m in server.models())
    print(f"serving {args.repository} on http://{server.url} and grpc {server.grpc_url} ({states}); "
          "Ctrl-C stops", flush=True)
    while not stop.wait(1.0):
        if server.process.poll() is not None:
            print(f"error: tritonserver exited with code {server.process.returncode}; the end of its log:\n"
                  f"{server.log_tail()}", file=sys.stderr)
            server.stop()
            return 1
    code = server.stop()
    print(f"stopped (tritonserver exit code {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
