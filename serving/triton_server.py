"""Start the ``tritonserver`` that PyTriton bundles on a model repository written by ``export/to_triton.py``.

    python -m serving.triton_server model_repository             # HTTP 127.0.0.1:8000; Ctrl-C stops
    python -m serving.triton_server model_repository --grpc-port 8001 --verbose   # + gRPC, server log shown

The public HTTP port is the project's validating front (:mod:`serving.front`, as ``serving.serve`` has):
Triton listens on a private loopback port, and every request is checked before Triton sees it, with the limits
the ensemble was written with (its ``to_triton.json``: batch size, image size) - the bundled Triton allocates
what a JSON request declares, so one request declaring a huge image would otherwise abort it. Only the ensemble
is public (inference, metadata, health); a request not received whole within ``--request-timeout`` of its
first byte (default 60 s) gets 408 and its connection is closed, as does a client that does not read its whole
answer within ``--response-timeout`` (default 60 s). Inference requests wait for the model in one queue
(``--queue-size``, default 16); one that cannot be answered within ``--deadline-s`` of its arrival (default 120 s,
predicted from the model's measured speed) gets 503 with Retry-After before it is computed. gRPC is off unless
``--grpc-port`` is given; it is then Triton's own, on 127.0.0.1 only, without the front (Triton checks data length
against the declared shape there, and the pre-processing model checks image size; for trusted local clients).
The server's log goes to a file (``--log``, default a temporary folder, named in the ready line); ``--verbose``
also shows it. A server that dies is reported in one line, and not restarted. So is a model process that dies
(a Python model's stub, OOM-killed for example): Triton does not restart it and would answer every request with
500 while its health endpoints still say ready, so the launcher watches the stubs it saw at start-up
(:func:`model_processes`, once a second, from ``/proc``), then stops the server and exits with code 1, for a
supervisor to restart it. Bad options are one ``error:`` line and exit code 2, as ``serving.serve``'s are;
start-up failures exit with code 1.

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
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from banet.cli_types import path_arg
from banet.outputs import file_in_the_way
from banet.triton_marker import MarkerError, RequestLimits, ensemble_limits
from serving.front import FrontServer, bind_problem, free_port, start_front
from serving.request_rules import (
    MB,
    FrontLimits,
    OneLineParser,
    add_front_options,
    add_port_options,
    listen_host,
    number,
)

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 25
LOOPBACK = "127.0.0.1"
#: The Python backend's per-instance process: Triton starts one for every instance of every Python model.
STUB = "triton_python_backend_stub"
#: Seconds a dead model process waits for the server's own exit to be seen first (which explains it better).
DEATH_GRACE_S = 1.0
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


def check_port(host: str, port: int, what: str) -> None:
    """Refuse, with one line, a port that something else already holds."""
    problem = bind_problem(host, port)
    if problem:
        raise TritonLaunchError(f"{what} port {host}:{port} is busy ({problem}); pick another with "
                                f"--{what.lower()}-port")


def http_get(host: str, port: int, path: str, timeout: float = 2.0, method: str = "GET") -> tuple[int, bytes]:
    """(status, body) of one request to the server's HTTP endpoint."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class ModelProcess:
    """One Python-backend stub process: what runs one instance of a Python model."""

    pid: int
    instance: str  # Triton's instance name, e.g. banet_ort_0_0 ("" if its command line does not say)
    model: str  # the model's folder name ("" if its command line does not say)

    def describe(self) -> str:
        return f"{self.model or 'a Python model'} (instance {self.instance or '?'}, pid {self.pid})"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from ``/proc``, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def model_processes(server_pid: int) -> list[ModelProcess]:
    """The Python-backend stubs the server ``server_pid`` runs (its children named :data:`STUB`), from ``/proc``.

    The stub's command line is ``stub <model.py> <shm region> <sizes...> <parent pid> <backend dir> <handle>
    <instance name> ...``: the model's folder and the instance name are read from it where it has them.
    """
    found: list[ModelProcess] = []
    if not Path("/proc").is_dir():  # not Linux (the bundled server is Linux-only): nothing to watch
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != server_pid or stat[0] == "Z":
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if Path(argv[0]).name != STUB:
            continue
        model = Path(argv[1]).parent.parent.name if len(argv) > 1 and argv[1].endswith(".py") else ""
        found.append(ModelProcess(int(entry.name), argv[8] if len(argv) > 8 else "", model))
    return sorted(found, key=lambda p: (p.model, p.instance, p.pid))


@dataclass
class TritonServer:
    """A running ``tritonserver`` process behind its validating front; :meth:`stop` (or leaving the ``with``
    block) ends both."""

    process: subprocess.Popen
    host: str
    http_port: int  # the public port: the front (0 until the front is bound)
    grpc_port: int | None  # Triton's own gRPC on 127.0.0.1, None: off
    metrics_port: int | None
    log_path: Path
    workdir: Path | None  # temporary backend folder and default log, removed by stop()
    shm_prefix: str
    triton_port: int = 0  # Triton's HTTP port, private, on 127.0.0.1
    model: str = ""  # the ensemble the front serves
    limits: RequestLimits | None = None
    front: FrontServer | None = None
    #: the model processes (Python-backend stubs) running once the server was ready; :meth:`dead_model` watches them
    model_processes: list[ModelProcess] = field(default_factory=list)
    keep_log: bool = False  # keep the default (temporary) log even after a clean stop: a failure names it
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        """host:port of the public HTTP endpoint (what ``tritonclient.http`` and ``serving.client`` take)."""
        return f"{self.host}:{self.http_port}"

    @property
    def triton_url(self) -> str:
        """host:port of Triton's own HTTP endpoint: private, unvalidated, every model (tests, statistics)."""
        return f"{LOOPBACK}:{self.triton_port}"

    @property
    def grpc_url(self) -> str | None:
        return None if self.grpc_port is None else f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        """Prometheus metrics (on 127.0.0.1), or None when they are off."""
        return None if self.metrics_port is None else f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def death_note(self) -> str:
        """One line: how the server ended and where its log is."""
        code = self.process.returncode
        how = f"was killed by signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0 and \
            -code in signal.valid_signals() else f"exited with code {code}"
        return f"tritonserver {how}; its log: {self.log_path}"

    def dead_model(self) -> ModelProcess | None:
        """A model process of :attr:`model_processes` that is gone (or a zombie) and was not replaced by one of the
        same instance, else None. Cheap (one ``/proc`` read per process while they live): call it every second.

        Triton neither restarts a stub that died (killed for memory, say) nor reports it: its health and model
        readiness endpoints stay 200 while every request to the model fails with "Stub process ... is not healthy".
        """
        for index, known in enumerate(self.model_processes):
            stat = _stat(known.pid)
            if stat is not None and stat[0] != "Z" and stat[1] == self.process.pid:
                continue
            replaced = [p for p in model_processes(self.process.pid) if known.instance and
                        (p.model, p.instance) == (known.model, known.instance)]
            if not replaced:
                return known
            self.model_processes[index] = replaced[0]
        return None

    def model_death_note(self, dead: ModelProcess) -> str:
        """One line: which model process died, what that means and where the server's log is."""
        return (f"the model process of {dead.describe()} died (killed, for example for memory: see the kernel log, "
                "dmesg); Triton does not restart it and would fail every request to it; stopped tritonserver, its "
                f"log: {self.log_path}")

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
        status, body = http_get(LOOPBACK, self.triton_port, "/v2/repository/index", method="POST")
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
                failures = self.load_failures()
                why = "".join(f"\n  {line}" for line in failures)
                tail = "" if failures else f"\nthe end of its log:\n{self.log_tail()}"
                raise TritonLaunchError(f"tritonserver exited with code {code} before it was ready (its log: "
                                        f"{self.log_path}){why}{tail}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(LOOPBACK, self.triton_port, "/v2/health/ready")[0] == 200:
                    return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TritonLaunchError(f"tritonserver was not ready after {timeout:.0f} s; the end of its log "
                                        f"({self.log_path}):\n{tail}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the front (no new requests), then the server cleanly (SIGTERM: Triton finishes in-flight
        requests), SIGKILL after ``timeout``. Returns the server's exit code; safe to call twice.
        """
        with self._lock:
            if self._stopped:
                return self.process.returncode
            self._stopped = True
        if self.front is not None:
            self.front.stop()
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
            keep = self.log_path.parent == self.workdir and (self.keep_log or self.process.returncode not in (0, None))
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
    if repository.exists() and not repository.is_dir():
        raise TritonLaunchError(f"model repository {repository} is a file, not a folder; give the folder "
                                "export/to_triton.py wrote")
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


def start(repository: str | Path, host: str = LOOPBACK, http_port: int = 8000, grpc_port: int | None = None,
          metrics_port: int | None = None, tritonserver: str | Path | None = None, log_path: str | Path | None = None,
          timeout: float = 120.0, log_verbose: int = 0, extra_args: tuple[str, ...] = (), model: str | None = None,
          max_body_bytes: int | None = None, queue_size: int = FrontLimits.queue_size,
          deadline_s: float = FrontLimits.deadline_s, request_timeout_s: float = FrontLimits.request_timeout_s,
          response_timeout_s: float = FrontLimits.response_timeout_s) -> TritonServer:
    """Start ``tritonserver`` on ``repository`` behind the validating front and wait until it is ready.

    The front listens on ``host:http_port`` (0: a free port) and checks every request against the limits the
    ensemble ``model`` (default: the only one) was written with; Triton's HTTP is on a private loopback port.
    ``grpc_port`` None: no gRPC; otherwise Triton's own gRPC on 127.0.0.1 (0: a free port), not fronted.
    ``tritonserver``: another server binary (its own backends are used); default: PyTriton's bundled one, set
    up as the module docstring says. ``metrics_port`` None turns metrics off (else on 127.0.0.1).
    ``max_body_bytes``: the front's request size limit (default: one image of the largest size, plus 1 MiB).
    ``queue_size``, ``deadline_s``: the front's queue for the model (:class:`serving.front.AdmissionQueue`).
    ``request_timeout_s`` / ``response_timeout_s``: seconds a client has to send a whole request (slower ones get
    408) / to read a whole response (slower readers are disconnected).
    """
    repository = Path(repository).resolve()
    bundled = find_bundled() if tritonserver is None else None
    _check_repository(repository, bundled is not None)
    try:
        model, limits = ensemble_limits(repository, model)
    except MarkerError as exc:
        raise TritonLaunchError(str(exc)) from None
    if tritonserver is not None and not Path(tritonserver).is_file():
        raise TritonLaunchError(f"tritonserver {tritonserver} not found")
    if http_port:
        check_port(host, http_port, "HTTP")
    ports: dict[str, int] = {}
    for what, port in (("gRPC", grpc_port), ("metrics", metrics_port)):
        if port is None:
            continue
        if port and (port in ports.values() or port == http_port):  # asked for: never moved without a word
            other = next((name for name, used in ports.items() if used == port), "HTTP")
            raise TritonLaunchError(f"--{what.lower()}-port {port} is also the {other} port; give each its own (0: "
                                    "any free port)")
        while not port or port in ports.values() or port == http_port:  # 0: a free port, distinct from the others
            port = free_port(LOOPBACK)
        check_port(LOOPBACK, port, what)
        ports[what] = port
    triton_port = free_port(LOOPBACK)
    while triton_port in ports.values() or triton_port == http_port:
        triton_port = free_port(LOOPBACK)
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
    command += [f"--model-repository={repository}", f"--http-address={LOOPBACK}", f"--http-port={triton_port}",
                "--exit-timeout-secs=10", f"--log-verbose={log_verbose}",
                f"--backend-config=python,shm-region-prefix-name={shm_prefix}"]
    if "gRPC" in ports:
        command += [f"--grpc-address={LOOPBACK}", f"--grpc-port={ports['gRPC']}"]
    else:
        command += ["--allow-grpc=false"]
    if "metrics" in ports:
        command += [f"--metrics-address={LOOPBACK}", f"--metrics-port={ports['metrics']}"]
    else:
        command += ["--allow-metrics=false"]
    command += list(extra_args)
    log_path = Path(log_path) if log_path is not None else workdir / "tritonserver.log"
    log.info("starting %s", " ".join(command))
    try:
        log_file = open(log_path, "wb")  # noqa: SIM115 (closed right below; the child keeps its copy)
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        why = file_in_the_way(log_path) or exc.strerror
        raise TritonLaunchError(f"cannot write the server log {log_path}: {why}") from None
    with log_file:
        try:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise TritonLaunchError(f"cannot run {binary}: {exc.strerror}") from None
    server = TritonServer(process, host, http_port, ports.get("gRPC"), ports.get("metrics"), log_path, workdir,
                          shm_prefix, triton_port, model, limits)
    try:
        server.wait_ready(timeout)
        server.model_processes = model_processes(process.pid)
        front_limits = FrontLimits(model=model, max_pixels=limits.max_pixels, max_body_bytes=max_body_bytes,
                                   max_batch=limits.max_batch, min_side=limits.min_side,
                                   queue_size=queue_size, deadline_s=deadline_s,
                                   request_timeout_s=request_timeout_s, response_timeout_s=response_timeout_s)
        try:
            server.front = start_front(host, http_port, front_limits, (LOOPBACK, triton_port))
        except OSError as exc:
            raise TritonLaunchError(f"HTTP port {host}:{http_port} cannot be opened ({exc.strerror})") from None
        server.http_port = server.front.port
    except BaseException:  # Ctrl-C while waiting included: never leave a server running in its own session
        server.stop()
        raise
    log.info("tritonserver ready: %s on http://%s (validated), Triton's own HTTP on %s%s%s", model, server.url,
             server.triton_url, "" if server.grpc_url is None else f", gRPC {server.grpc_url}",
             "" if server.metrics_url is None else f", metrics {server.metrics_url}")
    return server


def follow_log(path: Path, stop: threading.Event, out=None, poll_s: float = 0.2) -> threading.Thread:
    """Copy the server's log to ``out`` (default stderr) as it grows, until ``stop`` is set (``--verbose``)."""

    def run() -> None:
        stream = out or sys.stderr
        try:
            with open(path, errors="replace") as source:
                while True:
                    line = source.readline()
                    if line:
                        stream.write(line)
                        stream.flush()
                    elif stop.wait(poll_s):
                        break
        except OSError as exc:
            log.warning("cannot follow the server log %s: %s", path, exc.strerror)

    thread = threading.Thread(target=run, name="triton-log", daemon=True)
    thread.start()
    return thread


_NOT_HERE = """\
serving.serve's --max-batch and --max-megapixels do not apply here: they are fixed when the repository is
written (export/to_triton.py --max-batch, --max-megapixels; the front reads them from its to_triton.json), as are
--backend and --precision (export/to_triton.py --flavour, --onnx, --engine); --model here names the ensemble to
serve, not a network file. Metrics are off unless --metrics-port is given (--no-metrics is accepted)."""


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m serving.triton_server", description=__doc__, epilog=_NOT_HERE,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=path_arg, help="model repository written by export/to_triton.py")
    parser.add_argument("--host", type=listen_host, default=LOOPBACK,
                        help="address the (validated) HTTP port listens on (default: 127.0.0.1 only)")
    add_port_options(parser, metrics_default=None)
    parser.add_argument("--model", default=None,
                        help="the ensemble to serve, if the repository holds several (default: the only one)")
    add_front_options(parser, body_default="one image of the ensemble's largest size, plus 1 MiB")
    parser.add_argument("--tritonserver", type=path_arg, default=None,
                        help="another tritonserver binary (default: the one PyTriton bundles)")
    parser.add_argument("--log", "--triton-log", dest="log", type=path_arg, default=None,
                        help="write the server's log here (default: a temporary folder, removed on a clean stop)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show the server's log (stderr) as it runs")
    parser.add_argument("--timeout", type=number(float, 0, low_open=True), default=120.0,
                        help="seconds to wait for readiness (default %(default)g)")
    parser.add_argument("--log-verbose", type=number(int, 0), default=0, help="Triton's --log-verbose level")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.triton_server``: bad options are one ``error:`` line and exit code 2 (as
    ``serving.serve``'s), start-up failures exit code 1, Ctrl-C 130."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    stop = threading.Event()
    try:
        server = start(args.repository, args.host, args.http_port, args.grpc_port,
                       None if args.no_metrics else args.metrics_port, args.tritonserver, args.log, args.timeout,
                       args.log_verbose, model=args.model,
                       max_body_bytes=None if args.max_body_mb is None else int(args.max_body_mb * MB),
                       queue_size=args.queue_size, deadline_s=args.deadline_s, request_timeout_s=args.request_timeout,
                       response_timeout_s=args.response_timeout)
    except TritonLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted before the server was ready; stopped it", file=sys.stderr)
        return 130
    if args.verbose:
        follow_log(server.log_path, stop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    states = ", ".join(f"{m['name']} {m.get('state', '?')}" for m in server.models() if m["name"] == server.model)
    grpc = "" if server.grpc_url is None else f", unvalidated gRPC on {server.grpc_url}"
    metrics = "" if server.metrics_url is None else f", metrics on {server.metrics_url}"
    print(f"serving {args.repository} on http://{server.url} ({states}; images up to {server.limits.max_pixels:,} "
          f"pixels, batches up to {server.limits.max_batch}){grpc}{metrics}; server log: {server.log_path}; "
          "Ctrl-C stops", flush=True)
    while not stop.wait(1.0):
        dead = server.dead_model()
        if dead is not None and not stop.wait(DEATH_GRACE_S) and server.process.poll() is None:
            log.info("model process %s died; stopping tritonserver", dead.describe())
            server.keep_log = True  # the line below names it
            server.stop()
            print(f"error: {server.model_death_note(dead)}; not restarted", file=sys.stderr)
            return 1
        if server.process.poll() is not None:
            print(f"error: {server.death_note()}; not restarted", file=sys.stderr)
            stop.set()
            server.stop()
            return 1
    code = server.stop()
    print(f"stopped (tritonserver exit code {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
