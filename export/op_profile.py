"""Where a model file's time goes: each layer's time from the inference engine's own profiler (ONNX Runtime's
profile, OpenVINO's performance counters), summed by operator type, by network block and by kernel.

Why: a wall-clock number says how fast, not why. The layer times say which blocks an INT8 file speeds up and which
it leaves in float, which kernels run (``brgconv_avx512_I8`` is OpenVINO's int8 convolution; ``ref_*`` a slow
reference one) and how much goes to what an engine adds itself (layout reorders, quantize/dequantize steps). Blocks
are the network's own (:func:`calibration.int8.group_of`: ``BAM_2/BA``, ``BAM_2/CPDC``, ``de_layer3``...), the ones
``calibration.sensitivity`` keeps in float, so its quality trade-off and this time trade-off speak of the same parts.

OpenVINO lists the file's nodes each layer was compiled from, so every layer lands in its block. ONNX Runtime gives
the fused node's name only, and names a float Conv fused with its activation after the activation: in an FP32 file
the time of ``BAM_1/input_conv`` shows under ``BAM_1/fusion`` (its int8 nodes keep the convolution's name).

Both profilers add a little time to each layer: the wall times here are with profiling on; ``benchmarks.run``
gives the numbers to compare with other systems.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from banet.errors import OptionError
from calibration.int8 import group_of
from runtime.backends.base import LayerTime

#: The profilers this module reads.
BACKENDS = ("openvino", "onnxruntime")

#: The block of a layer that is in none of the network's blocks: one an engine inserted (a layout reorder named
#: after layers it does not keep), or a node outside every block (the input's quantization, the output's).
UNATTRIBUTED = "(outside blocks)"


@dataclass
class FileProfile:
    """One file's profile on one backend: the wall time of each measured run and each layer's mean time."""

    file: str
    backend: str
    shape: tuple[int, int, int, int]
    threads: int | None
    wall_ms: list[float]
    layers: list[LayerTime] = field(default_factory=list)
    #: the arithmetic: "f32" (the file's own) or "bf16" (OpenVINO's bfloat16)
    arithmetic: str = "f32"

    @property
    def kernel_ms(self) -> float:
        """The layers' times together (ms per run): below the wall time by what runs between layers."""
        return sum(layer.ms for layer in self.layers)

    def by(self, key: str) -> list[tuple[str, float]]:
        """(name, ms per run) summed by ``key``: "op_type", "block" or "kernel", largest first."""
        if key == "block":
            names = layer_blocks(self.layers)
        elif key == "op_type":
            names = [layer.op_type for layer in self.layers]
        elif key == "kernel":
            names = [f"{layer.op_type} {layer.kernel}" for layer in self.layers]
        else:
            raise OptionError(f"group layers by block, op_type or kernel, not {key!r}")
        sums: Counter[str] = Counter()
        for name, layer in zip(names, self.layers, strict=True):
            sums[name] += layer.ms
        return sums.most_common()

    def to_dict(self, top: int = 10) -> dict:
        """The profile as plain data: totals, the three summaries and the ``top`` slowest layers."""
        kernel = self.kernel_ms or 1.0
        return {"file": self.file, "backend": self.backend, "shape": "x".join(map(str, self.shape)),
                "arithmetic": self.arithmetic, "threads": self.threads, "runs": len(self.wall_ms),
                "wall_ms_median": round(float(np.median(self.wall_ms)), 2) if self.wall_ms else None,
                "kernel_ms": round(self.kernel_ms, 2), "layers": len(self.layers),
                **{f"by_{key}": [{"name": name, "ms": round(ms, 3), "share": round(ms / kernel, 4)}
                                 for name, ms in self.by(key)] for key in ("block", "op_type", "kernel")},
                "slowest": [{"name": layer.name, "op_type": layer.op_type, "kernel": layer.kernel,
                             "ms": round(layer.ms, 3), "block": block}
                            for layer, block in sorted(zip(self.layers, layer_blocks(self.layers), strict=True),
                                                       key=lambda pair: -pair[0].ms)[:top]]}


def block_of(layer: LayerTime, known: Iterable[str] = ()) -> str:
    """The network block a layer belongs to: the block most of its file nodes are in; else, for a layer an engine
    inserted, the one of ``known`` (blocks found from file nodes) its own name points to (an engine names a
    reorder after the layers it joins: ``/Concat_aBcd16b_acdb_/de_layer2/...``); else :data:`UNATTRIBUTED`."""
    blocks = Counter(block for block in map(group_of, layer.sources) if block != "top")
    if blocks:
        return blocks.most_common(1)[0][0]
    parts = [part for part in layer.name.split("/") if part]
    for start in range(len(parts)):  # the module path, after any prefix of the engine's own
        block = group_of("/" + "/".join(parts[start:]))
        if block in known:
            return block
    return UNATTRIBUTED


def layer_blocks(layers: list[LayerTime]) -> list[str]:
    """:func:`block_of` each layer, the blocks its file nodes name known to all."""
    known = {group_of(name) for layer in layers for name in layer.sources} - {"top"}
    return [block_of(layer, known) for layer in layers]


def mean_layers(runs: list[list[LayerTime]]) -> list[LayerTime]:
    """Each layer's mean time over ``runs`` (the same layers each run, in the first run's order)."""
    if not runs:
        return []
    totals: dict[tuple[str, str], float] = {}
    for layers in runs:
        for layer in layers:
            totals[layer.name, layer.op_type] = totals.get((layer.name, layer.op_type), 0.0) + layer.ms
    return [LayerTime(layer.name, layer.op_type, layer.kernel, totals[layer.name, layer.op_type] / len(runs),
                      layer.sources) for layer in runs[0]]


def profile_file(path: str | Path, backend: str = "openvino", shape: tuple[int, int, int, int] = (1, 3, 720, 1280),
                 threads: int | None = None, runs: int = 5, warmup: int = 1, bf16: bool = False) -> FileProfile:
    """Run ``path`` ``warmup`` + ``runs`` times on ``backend`` with its profiler on and return the measured runs'
    profile. The input is a seeded photo-like batch (:func:`export.parity.photo_batch`): layer times do not depend
    on pixel values, but a constant input could take paths a photo does not. ``bf16``: OpenVINO computes an FP32
    file in bfloat16 (``precision="bf16"``)."""
    from export.parity import photo_batch

    if backend not in BACKENDS:
        raise OptionError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if runs < 1 or warmup < 0:
        raise OptionError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}")
    if bf16 and backend != "openvino":
        raise OptionError("bf16 arithmetic is OpenVINO's (precision='bf16'); profile it with backend 'openvino'")
    n, _, h, w = shape
    batch = photo_batch(n, h, w)
    if backend == "openvino":
        wall, per_run = _openvino_runs(Path(path), batch, threads, runs, warmup, "bf16" if bf16 else "f32")
    else:
        wall, per_run = _onnxruntime_runs(Path(path), batch, threads, runs, warmup)
    return FileProfile(str(path), backend, tuple(int(d) for d in batch.shape), threads, wall, mean_layers(per_run),
                       "bf16" if bf16 else "f32")


def _openvino_runs(path: Path, batch: np.ndarray, threads: int | None, runs: int, warmup: int,
                   arithmetic: str = "f32") -> tuple[list[float], list[list[LayerTime]]]:
    """Wall ms and layer times of each measured run on OpenVINO (compiled for this one shape, no compile cache:
    a compiled model read back from the cache keeps no record of the file's nodes)."""
    from runtime.backends.openvino_backend import OpenVinoBackend

    backend = OpenVinoBackend(path, threads=threads, compile_cache=None, profile=True,
                              inference_precision=arithmetic)
    try:
        for _ in range(warmup):
            backend.run(batch)
        wall, layers = [], []
        for _ in range(runs):
            start = time.perf_counter()
            backend.run(batch)
            wall.append((time.perf_counter() - start) * 1e3)
            layers.append(backend.layer_times())
        return wall, layers
    finally:
        backend.close()


def _onnxruntime_runs(path: Path, batch: np.ndarray, threads: int | None, runs: int,
                      warmup: int) -> tuple[list[float], list[list[LayerTime]]]:
    """Wall ms and layer times of each measured run on ONNX Runtime's CPU provider, from its JSON profile (each
    node's ``*_kernel_time`` event, assigned to the ``model_run`` it falls in)."""
    from runtime.backends.onnxruntime_backend import open_session, session_forward

    with tempfile.TemporaryDirectory(prefix="banet-profile-") as tmp:
        session = open_session(path, ["CPUExecutionProvider"], threads, profile_prefix=str(Path(tmp) / "ort"))
        run = session_forward(session)
        wall = []
        for index in range(warmup + runs):
            start = time.perf_counter()
            run(batch)
            if index >= warmup:
                wall.append((time.perf_counter() - start) * 1e3)
        events = json.loads(Path(session.end_profiling()).read_text())
    return wall, onnxruntime_layers(events)[warmup:]


def onnxruntime_layers(events: list[dict]) -> list[list[LayerTime]]:
    """ONNX Runtime profile events as layer times, one list per ``model_run``, in order."""
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")
    per_run: list[list[LayerTime]] = [[] for _ in windows]
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        index = next((i for i, (start, end) in enumerate(windows) if start <= e["ts"] <= end), None)
        if index is None:
            continue
        node = name[: -len("_kernel_time")]
        args = e.get("args", {})
        per_run[index].append(LayerTime(node, args.get("op_name", "?"), args.get("provider", "?"),
                                        e["dur"] / 1e3, (node,)))
    return per_run
