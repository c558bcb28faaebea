"""Drift report: every precision against FP32 PyTorch, and what it costs in restoration quality and buys in speed.

    python -m calibration.drift              # default model -> out/drift/drift_report.json + drift_report.md
    python -m calibration.drift --full       # + FP16 drift of the full stack-10 network (random weights)
    python -m calibration.drift --output r/  # r/drift_report.json + .md; a report already there only with --force

out/drift is this command's own folder: each run replaces the report there, as a build folder. A folder you name
with --output is yours: a report already in it is refused (before any work) unless you pass --force.

Rows: FP32 ONNX, FP16 ONNX (ONNX Runtime CPU), FP16 PyTorch (emulated on CPU; real half precision on a GPU
when one is present), INT8 Q/DQ in the ``ort``, ``trt`` and ``ov`` flavours (ONNX Runtime CPU). For each,
on the held-out set (blurred crops of photos never used for training): the PSNR of its output vs FP32
PyTorch's (mean and worst image, and the max abs error of the raw output), and its restoration PSNR/SSIM vs the
sharp images, with the change from FP32. Then the INT8 vs FP32 ONNX Runtime CPU speed ratio, measured in the
same run (warm-up, interleaved repeats, median) at 1 and 2 threads (not the ``ov`` file: OpenVINO's, timed by
``benchmarks.run``). Missing models are made first: the FP16
ONNX with the exporter, the INT8 models with ``calibration.quantize``'s defaults. Where OpenVINO is installed, the
FP32 and INT8 files again on OpenVINO (compiled per shape, the runtime's default, and for dynamic shapes), and the
FP32 file in bfloat16 arithmetic on CPUs with bfloat16 units (``Deblurrer(precision="bf16")``), and on such CPUs
the checkpoint on PyTorch under bfloat16 autocast (``Deblurrer(weights, precision="bf16")``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # a thin install (no torch, onnx...): one line naming what to install, not a traceback
    import numpy as np

    from banet.machine import cpu_name, int8_units
    from banet.outputs import shown_path, write_together
    from calibration.heldout import openvino_forward, run_heldout
    from export.parity import Forward, changed_8bit, psnr_db
    from runtime.backends.base import BackendUnavailableError
    from runtime.stop_signals import stoppable, stopped_line
except ModuleNotFoundError as _missing:  # one line where run as a command (console scripts too)
    from banet.defaults import exit_if_command

    exit_if_command(_missing, __name__, "python -m calibration.drift")
    raise

log = logging.getLogger(__name__)

DEFAULT_OUTPUT = Path("out/drift")


@dataclass
class DriftRow:
    """One precision/backend on the held-out set."""

    name: str
    precision: str
    backend: str
    drift_psnr_db: float
    drift_worst_psnr_db: float
    max_abs_error: float
    psnr: float
    ssim: float
    delta_psnr_db: float = 0.0
    delta_ssim: float = 0.0
    file: str | None = None
    seconds: float = 0.0
    note: str = ""
    #: share of the 8-bit output values (every channel of every pixel) that differ from the reference's, and the
    #: largest difference in levels: whether a user gets the same pixels, which the drift in dB does not say
    changed_8bit: float = 0.0
    max_change_8bit: int = 0


def drift_row(name: str, precision: str, backend: str, forward: Forward, pairs, reference: list[np.ndarray],
              baseline: dict | None, file: Path | None = None, note: str = "") -> tuple[DriftRow, list, dict]:
    """Measure one forward: drift vs the reference raw outputs, restoration quality and its change."""
    started = time.perf_counter()
    raws, summary = run_heldout(forward, pairs)
    seconds = time.perf_counter() - started
    psnrs = [psnr_db(r, c) for r, c in zip(reference, raws)]
    err = max(float(np.max(np.abs(r.astype(np.float64) - c))) for r, c in zip(reference, raws))
    changes = [changed_8bit(r, c) for r, c in zip(reference, raws)]
    base = baseline or summary
    row = DriftRow(name, precision, backend, float(np.mean(psnrs)), float(np.min(psnrs)), err,
                   summary["psnr_deblurred"], summary["ssim_deblurred"],
                   summary["psnr_deblurred"] - base["psnr_deblurred"],
                   summary["ssim_deblurred"] - base["ssim_deblurred"],
                   shown_path(file) if file else None, seconds, note,
                   sum(n for n, _ in changes) / sum(r.size for r in reference), max(m for _, m in changes))
    log.info("%-34s drift %.1f dB (worst %.1f), 8-bit values changed %s, PSNR %.3f dB (%+.3f), SSIM %.4f (%+.4f), "
             "%.1f s", name, row.drift_psnr_db, row.drift_worst_psnr_db,
             changed_text(row.changed_8bit, row.max_change_8bit), row.psnr, row.delta_psnr_db, row.ssim,
             row.delta_ssim, seconds)
    return row, raws, summary


def changed_text(share: float | None, most: int | None) -> str:
    """A row's 8-bit change as the report shows it: the share of values changed and, where any did, by how many
    levels at most (``0%`` exactly where none did)."""
    if share is None:  # a report written before the column
        return "-"
    return "0%" if not most else f"{100 * share:.3g}% (<= {most})"


def measure_speed(models: dict[str, Path], shape: tuple[int, int, int] = (1, 256, 256),
                  threads: Sequence[int] = (1, 2), warmup: int = 2, repeats: int = 7) -> list[dict]:
    """Median latency (ms) of each ONNX model on ONNX Runtime CPU, interleaved so load changes hit all alike."""
    from export.parity import photo_batch
    from runtime.backends.onnxruntime_backend import open_session, session_forward

    x = photo_batch(*shape)
    results = []
    for count in threads:
        runs = {name: session_forward(open_session(path, ["CPUExecutionProvider"], count))
                for name, path in models.items()}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(warmup):
            for run in runs.values():
                run(x)
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run(x)
                times[name].append((time.perf_counter() - start) * 1e3)
        results.append({"threads": count, "median_ms": {k: round(statistics.median(v), 2) for k, v in times.items()},
                        "min_ms": {k: round(min(v), 2) for k, v in times.items()}})
    return results


def profile_ops(path: Path, shape: tuple[int, int, int] = (1, 256, 256), threads: int = 1, runs: int = 3,
                top: int = 8) -> dict:
    """ONNX Runtime's own profile of a model: time per op type (ms per run, after one warm-up), largest first
    (:func:`export.op_profile.profile_file`; ``python -m benchmarks.profile`` shows blocks and layers too).

    Shows where an INT8 model's time goes: fused int8 kernels (QLinearConv...) or float kernels with
    QuantizeLinear/DequantizeLinear around them.
    """
    from export.op_profile import profile_file

    profile = profile_file(path, "onnxruntime", (shape[0], 3, shape[1], shape[2]), threads, runs)
    total = profile.kernel_ms or 1.0
    return {"file": shown_path(path), "shape": "x".join(map(str, shape)), "threads": threads,
            "kernel_ms_per_run": round(profile.kernel_ms, 1),
            "ops": [{"op": op, "ms": round(ms, 1), "share": round(ms / total, 3)}
                    for op, ms in profile.by("op_type")[:top]]}


def torch_bf16_forward(weights: Path, threads: int | None) -> Forward | None:
    """The runtime's PyTorch backend on the checkpoint under bfloat16 autocast, or None where the CPU has no
    bfloat16 units (the row is then left out)."""
    from banet.torch_backend import TorchBackend

    try:
        return TorchBackend(weights, device="cpu", threads=threads, inference_precision="bf16").run
    except BackendUnavailableError as exc:
        log.info("no PyTorch bf16 row: %s", exc)
        return None


def gpu_half_forward(model) -> Forward | None:
    """Real half precision on a CUDA GPU (the FP16 export's structure), or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    from export.onnx_export import HalfPrecisionBANet

    half = HalfPrecisionBANet(copy.deepcopy(model).float()).cuda().eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return half(torch.from_numpy(x).cuda()).float().cpu().numpy()

    return run


def markdown(report: dict) -> str:
    """The report as Markdown tables."""
    held = report["heldout"]
    lines = [f"# Drift report: {report['model']['name']} ({report['model']['config']})", "",
             f"Held-out set: {held['images']} blurred crops of {held['size']} px (photos never used for training); "
             f"blurred input PSNR {held['psnr_blurred']:.2f} dB / SSIM {held['ssim_blurred']:.4f}. Drift = PSNR "
             "of each output vs FP32 PyTorch's (mean over images; worst image), after clamping. 8-bit values "
             "changed: the share of the uint8 output values (each channel of each pixel) that differ from FP32 "
             "PyTorch's, and by how many levels at most.", "",
             "| precision | backend | drift vs FP32 PyTorch dB (worst) | 8-bit values changed | max abs err | PSNR dB "
             "| delta dB | SSIM | delta SSIM |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        changed = changed_text(r.get("changed_8bit"), r.get("max_change_8bit"))
        lines.append(f"| {r['name']} | {r['backend']} | {r['drift_psnr_db']:.1f} ({r['drift_worst_psnr_db']:.1f}) "
                     f"| {changed} | {r['max_abs_error']:.2e} | {r['psnr']:.3f} | {r['delta_psnr_db']:+.3f} "
                     f"| {r['ssim']:.4f} | {r['delta_ssim']:+.4f} |")
    notes = [f"- {r['name']}: {r['note']}" for r in report["rows"] if r["note"]]
    if notes:
        lines += ["", *notes]
    speed = report.get("speed")
    if speed:
        lines += ["", f"## Speed on ONNX Runtime CPU ({speed['shape']}, {speed['machine']}; median of "
                      f"{speed['repeats']} interleaved runs after {speed['warmup']} warm-up)", "",
                  "| threads | " + " | ".join(f"{k} ms" for k in speed["models"]) + " | "
                  + " | ".join(f"{k} speed-up" for k in speed["models"] if k != "FP32 ONNX") + " |",
                  "|---:|" + "---:|" * (2 * len(speed["models"]) - 1)]
        for res in speed["results"]:
            ms = res["median_ms"]
            ratios = [f"{ms['FP32 ONNX'] / ms[k]:.2f}x" for k in speed["models"] if k != "FP32 ONNX"]
            lines.append(f"| {res['threads']} | " + " | ".join(f"{ms[k]:.1f}" for k in speed["models"]) + " | "
                         + " | ".join(ratios) + " |")
    profile = report.get("profile")
    if profile:
        first = next(iter(profile.values()))
        lines += ["", f"## Where the time goes (ONNX Runtime profile, {first['shape']}, {first['threads']} thread; "
                      "kernel ms per run by op type)", "", "| model | kernels ms | largest op types |",
                  "|---|---:|---|"]
        for name, prof in profile.items():
            ops = ", ".join(f"{o['op']} {o['ms']:.0f}" for o in prof["ops"][:5])
            lines.append(f"| {name} | {prof['kernel_ms_per_run']:.0f} | {ops} |")
    int8 = report.get("int8") or {}
    if int8:
        lines += ["", "## INT8 models", ""]
        for flavour, info in int8.items():
            lines.append(f"- `{info['file']}` ({flavour}): {info['format']}; calibration {info['calibration']}; "
                         f"kept in float: {', '.join(info['excluded_groups']) or 'none'}")
    full = report.get("full_network_fp16")
    if full:
        lines += ["", f"## FP16 drift of {full['network']}", "", full["note"], "",
                  "| variant | worst PSNR vs FP32 PyTorch dB | per shape |", "|---|---:|---|"]
        for name, row in full["results"].items():
            per = ", ".join(f"{k}: {v:.1f}" for k, v in row["per_shape"].items())
            lines.append(f"| {name} | {row['worst_psnr_db']:.1f} | {per} |")
    cpu = f"CPU: {report['cpu']} (int8 units: {report['int8_units']})" if "cpu" in report else None
    lines += ["", f"GPU: {report['gpu']}", *([cpu] if cpu else []), f"Whole run: {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def int8_info(path: Path) -> dict:
    """What an INT8 file says about itself (flavour, calibration, float blocks)."""
    from banet.metadata import read_onnx_metadata

    extra = read_onnx_metadata(path).extra
    return {"file": shown_path(path), "format": extra.get("int8_format", "?"),
            "calibration": json.loads(extra.get("int8_calibration", "{}")),
            "excluded_groups": json.loads(extra.get("int8_excluded_groups", "[]")),
            "quantized_nodes": int(extra.get("int8_quantized_nodes", 0))}


def build_report(model, weights: Path, config, fp32: Path, fp16: Path | None, int8: dict[str, Path],
                 limit: int | None = None, speed: bool = True, full: bool = False, threads: int = 1,
                 fp16_rows: bool = True, speed_shape: tuple[int, int, int] = (1, 256, 256), repeats: int = 7,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Measure every row (see module docstring) and return the report as a dict."""
    # Long by design (~80 lines): one row per artifact, in the report's order, each a few lines.
    from tqdm import tqdm

    from calibration.fp16 import emulated_fp16_forward
    from calibration.photos import heldout_pairs
    from export.onnx_export import torch_forward
    from export.runtime_forwards import onnxruntime_forward

    started = time.perf_counter()
    pairs = heldout_pairs()[:limit]
    reference_forward = torch_forward(model)
    candidates: list[tuple[str, str, str, Callable[[], Forward | None], Path | None, str]] = [
        ("FP32 ONNX", "fp32", "ONNX Runtime CPU", lambda: onnxruntime_forward(fp32, threads), fp32, ""),
    ]
    if fp16 is not None:
        candidates.append(("FP16 ONNX", "fp16", "ONNX Runtime CPU", lambda: onnxruntime_forward(fp16, threads), fp16,
                           "ONNX Runtime's CPU provider upcasts much of an FP16 graph to float32, so this "
                           "understates GPU drift"))
    if fp16_rows:
        candidates.append(("FP16 PyTorch (emulated)", "fp16", "PyTorch CPU, emulated",
                           lambda: emulated_fp16_forward(model), None,
                           "float16 storage of weights and every activation, float32 arithmetic inside each op "
                           "(a GPU's tensor-core path), residual add in float32 as exported"))
        candidates.append(("FP16 PyTorch (GPU)", "fp16", "PyTorch CUDA", lambda: gpu_half_forward(model), None,
                           "real half precision on the GPU"))
    for flavour, path in int8.items():
        candidates.append((f"INT8 {flavour}", "int8", "ONNX Runtime CPU",
                           lambda p=path: onnxruntime_forward(p, threads), path, ""))
    for name, precision, path in [("FP32", "fp32", fp32)] + [(f"INT8 {f}", "int8", p) for f, p in int8.items()]:
        candidates.append((f"{name} OpenVINO", precision, "OpenVINO CPU", lambda p=path: openvino_forward(p, threads),
                           path, "the same ONNX file compiled by OpenVINO for the input's shape"))
        candidates.append((f"{name} OpenVINO, dynamic shapes", precision, "OpenVINO CPU",
                           lambda p=path: openvino_forward(p, threads, static=False), path,
                           "compiled once for any shape (Deblurrer(backend=\"openvino\", static=False); what an "
                           "app compiling the file itself gets)"))
    for flavour, path in int8.items():
        candidates.append((f"INT8 {flavour} OpenVINO in BF16", "int8", "OpenVINO CPU, bfloat16",
                           lambda p=path: openvino_forward(p, threads, inference_precision="bf16"), path,
                           "the file's float layers in bfloat16, its int8 ones unchanged (Deblurrer(precision="
                           "\"int8\") on OpenVINO where the CPU has bfloat16 units and the file's record measured "
                           "it); OpenVINO compiles the ov flavour so, not the ort one"))
    candidates.append(("FP32 OpenVINO in BF16", "bf16", "OpenVINO CPU, bfloat16",
                       lambda: openvino_forward(fp32, threads, inference_precision="bf16"), fp32,
                       "the FP32 file in bfloat16 arithmetic (Deblurrer(precision=\"bf16\")); CPUs with bfloat16 "
                       "units only"))
    candidates.append(("Checkpoint PyTorch in BF16", "bf16", "PyTorch CPU, bfloat16 autocast",
                       lambda: torch_bf16_forward(weights, threads), None,
                       "the checkpoint folded, channels_last, under bfloat16 autocast (Deblurrer(weights, "
                       "precision=\"bf16\")); CPUs with bfloat16 units only"))

    reference, baseline = run_heldout(reference_forward, pairs)
    rows = [DriftRow("FP32 PyTorch (reference)", "fp32", "PyTorch CPU", 200.0, 200.0, 0.0,
                     baseline["psnr_deblurred"], baseline["ssim_deblurred"])]
    gpu = "none here: FP16 drift is emulated on the CPU (see calibration/fp16.py)"
    for name, precision, backend, make, path, note in tqdm(candidates, desc="precisions", disable=progress is None):
        forward = make()
        if forward is None:
            continue
        if backend == "PyTorch CUDA":
            import torch

            gpu = torch.cuda.get_device_name(0)
        try:
            row, _, _ = drift_row(name, precision, backend, forward, pairs, reference, baseline, path, note)
        except BackendUnavailableError as exc:  # compiled at the first image: OpenVINO refusing that lowering
            log.info("no %s row: %s", name, exc)
            continue
        rows.append(row)

    import torch

    from banet.checkpoint import file_sha256

    report = {"model": {"name": weights.name, "config": config.describe(), "weights": shown_path(weights),
                        "sha256": file_sha256(weights)},
              "reference": "FP32 PyTorch (CPU)",
              "heldout": {"images": len(pairs), "size": pairs[0][1].shape[0],
                          "psnr_blurred": baseline["psnr_blurred"], "ssim_blurred": baseline["ssim_blurred"]},
              "rows": [asdict(r) for r in rows], "gpu": gpu,
              # OpenVINO's int8 kernels, and what an INT8 file loses on them, differ by CPU unit (banet.machine)
              "cpu": cpu_name(), "int8_units": int8_units(),
              "int8": {flavour: int8_info(path) for flavour, path in int8.items()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "onnxruntime": __import__("onnxruntime").__version__}}
    if speed and int8:
        # ONNX Runtime's speed: not the ov file's (OpenVINO's own; benchmarks.run times it there)
        models = {"FP32 ONNX": fp32, **{f"INT8 {f}": p for f, p in int8.items() if f != "ov"}}
        shape, warmup = speed_shape, 2
        results = measure_speed(models, shape, (1, 2), warmup, repeats)
        report["speed"] = {"shape": "x".join(map(str, shape)), "machine": cpu_name(), "warmup": warmup,
                           "repeats": repeats, "models": list(models), "results": results}
        for res in results:
            ms = res["median_ms"]
            res["speedup_vs_fp32"] = {k: round(ms["FP32 ONNX"] / v, 3) for k, v in ms.items() if k != "FP32 ONNX"}
        report["profile"] = {name: profile_ops(path, shape) for name, path in models.items()}
    if full:
        report["full_network_fp16"] = full_network_fp16()
    ort_row = next((r for r in rows if r.name == "INT8 ort"), None)
    if ort_row is not None:
        report["acceptance"] = {"int8_ort_delta_psnr_db": round(ort_row.delta_psnr_db, 4),
                                "int8_ort_within_0.3_db": abs(ort_row.delta_psnr_db) <= 0.3}
        if report.get("speed"):
            report["acceptance"]["int8_ort_speedup_1_thread"] = report["speed"]["results"][0]["speedup_vs_fp32"].get(
                "INT8 ort")
    report["seconds"] = time.perf_counter() - started
    return report


def full_network_fp16() -> dict:
    """FP16 drift of the paper's stack-10 network (random weights, seed 0: its trained weights are not here)."""
    import torch

    from banet.config import FULL
    from banet.model import BANet
    from calibration.fp16 import measure

    torch.manual_seed(0)
    model = BANet(FULL).eval()
    shapes = ((1, 256, 256), (2, 64, 96))
    return {"network": f"{FULL.describe()}, random weights (seed 0)",
            "note": "Random weights: only the default network is trained here (the authors' weights cannot be "
                    "downloaded), so these numbers show the architecture's FP16 numerics, not a trained model's. "
                    "Inputs: real photos resized to each shape.",
            "results": measure(model, shapes=shapes)}


def ensure_fp16_onnx(fp32: Path, weights: Path) -> Path:
    """``<fp32 stem>_fp16.onnx`` beside the FP32 file, exported (and verified) first if missing; refused if made
    from other weights (:func:`export.artifact_chain.exported_onnx`)."""
    from export.artifact_chain import exported_onnx

    return exported_onnx(weights, "fp16", fp32.with_name(f"{fp32.stem}_fp16.onnx"),
                         verify_shapes=[(1, 64, 64), (2, 38, 50), (1, 256, 256)])


def quantize_command(flavour: str, fp32: Path | None, weights: Path | None, output: Path | None = None) -> str:
    """The ``python -m calibration.quantize`` line that makes an INT8 file (``--onnx``/``--weights`` only where
    given), quoted for a shell."""
    parts = ["python", "-m", "calibration.quantize", "--flavour", flavour]
    parts += ["--onnx", shown_path(fp32)] if fp32 is not None else []
    parts += ["--weights", shown_path(weights)] if weights is not None else []
    parts += ["--output", shown_path(output)] if output is not None else []
    return shlex.join(parts)


def read_int8(path: Path, fp32: Path | None = None, weights: Path | None = None) -> Path:
    """A given ``--int8`` file, checked: there, readable, a BANet INT8 Q/DQ model (QuantizeError, one line).

    The hint names the command that makes one from the FP32 ONNX (``fp32``: the given ``--onnx``, None for the
    default) and ``weights`` given: written to ``path`` where it is missing, never over a file that is there (an
    FP32 file given by mistake is quantized to a name of its own)."""
    from banet.artifacts import int8_onnx_path
    from banet.metadata import ArtifactError, read_onnx_metadata
    from calibration.int8 import QuantizeError

    flavour = next((f for f in ("trt", "ov") if f"_int8_{f}" in path.stem.lower()), "ort")
    try:
        metadata = read_onnx_metadata(path)
    except FileNotFoundError as exc:
        raise QuantizeError(f"{exc}; make it with {quantize_command(flavour, fp32, weights, path)}") from None
    except ArtifactError as exc:
        raise QuantizeError(str(exc)) from None
    if metadata.precision == "fp32":
        raise QuantizeError(f"{path} is an FP32 model, not an INT8 Q/DQ one; quantize it with "
                            f"{quantize_command(flavour, path, None)} and pass the file it writes, "
                            f"{shown_path(int8_onnx_path(path, flavour))}, as --int8")
    if metadata.precision != "int8":
        raise QuantizeError(f"{path} is a {metadata.precision} model, not an INT8 Q/DQ one; make one with "
                            f"{quantize_command(flavour, fp32, weights)} and pass the file it writes (it prints its "
                            "name) as --int8")
    return path


def check_int8_source(files, weights: Path, given: bool = True) -> None:
    """Refuse (QuantizeError, one line) an INT8 file quantized from other weights than ``weights``: its rows would
    be reported, or timed (``benchmarks.run``), under this model's name. ``given``: the files came from ``--int8``
    (else they were found beside the FP32 ONNX, and the fix is re-quantizing)."""
    from banet.metadata import read_onnx_metadata, stale_source
    from calibration.int8 import QuantizeError

    for path in files:
        if (stale := stale_source(read_onnx_metadata(path), path, weights)) is not None:
            fix = ("give the INT8 file quantized from this model's ONNX" if given else
                   "re-quantize it: python -m calibration.quantize --force")
            raise QuantizeError(f"{'--int8 ' if given else ''}{stale}; {fix}")


@stoppable
def main(argv: list[str] | None = None) -> int:
    from banet.cli_types import number, path_arg, threads
    from banet.defaults import missing_module_line
    from runtime.images import quiet_opencv

    try:  # ONNX Runtime's quantization tools need onnx (the export extra): one line where it is missing
        from calibration.cli_common import add_calibration_arguments, calibration_options_given, help_text
    except ModuleNotFoundError as exc:
        print(missing_module_line(exc, "python -m calibration.drift"), file=sys.stderr)
        return 1

    parser = argparse.ArgumentParser(prog="python -m calibration.drift", description=help_text(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="checkpoint (default: the embedded default model)")
    parser.add_argument("--onnx", type=path_arg, default=None,
                        help="FP32 ONNX (default engines/<weights stem>.onnx, exported if missing)")
    parser.add_argument("--int8", type=path_arg, nargs="*", default=None,
                        help="INT8 Q/DQ files (default engines/<stem>_int8_ort.onnx, _int8_trt.onnx and "
                             "_int8_ov.onnx, made with calibration.quantize's defaults if missing)")
    parser.add_argument("--output", type=path_arg, default=None,
                        help="folder for drift_report.json and drift_report.md (default out/drift, whose report "
                             "each run regenerates; in a folder you name, an existing report only with --force)")
    parser.add_argument("--force", action="store_true",
                        help="replace the report already in the --output folder you named (out/drift's is always "
                             "replaced)")
    parser.add_argument("--full", action="store_true", help="add FP16 drift of the full stack-10 network")
    parser.add_argument("--limit", type=number(int, 1), default=None, help="only the first N held-out images")
    parser.add_argument("--no-speed", action="store_true", help="skip the INT8 vs FP32 speed measurement")
    parser.add_argument("--no-fp16", action="store_true", help="skip the FP16 rows (INT8 only, faster)")
    parser.add_argument("--threads", type=threads(0), default=1,
                        help="ONNX Runtime threads for the quality rows (0: all cores; default 1)")
    add_calibration_arguments(parser)
    args = parser.parse_args(argv)
    if args.int8 is not None and (given := calibration_options_given(parser, args)):
        # the files given are measured as they are: the options were ignored without a word
        parser.error(f"{', '.join(given)} choose how the INT8 files are quantized; with --int8 none is (its files "
                     "are measured as they were made): leave them out, or quantize with python -m "
                     "calibration.quantize")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_opencv()

    from banet.checkpoint import load_checkpoint
    from banet.defaults import default_weights_path
    from banet.metadata import read_onnx_metadata, stale_source
    from banet.outputs import check_output, wait_while_written
    from calibration.cli_common import command_errors, ensure_fp32_onnx, error_line, read_files, source_from_args
    from calibration.int8 import DEFAULT_EXCLUDE, FLAVOURS, QuantizeError, default_int8_path, quantize_int8

    # out/drift is this command's own folder (a rerun refreshes its report, as a build folder); a folder the user
    # names may hold a report they keep, replaced only with --force. Both refused before the (minutes of) work.
    replace = args.force or args.output is None
    args.output = DEFAULT_OUTPUT if args.output is None else args.output
    try:
        inputs = list(read_files(args.onnx, args.weights).items())  # never written over, even with --force
        fp32_path = inputs[0][1]
        inputs.append(("the FP16 ONNX", fp32_path.with_name(f"{fp32_path.stem}_fp16.onnx")))
        inputs += ([("an INT8 model (--int8)", path) for path in args.int8] if args.int8 is not None else
                   [("the default INT8 model", default_int8_path(fp32_path, f)) for f in FLAVOURS])
        for name, suffix in (("drift_report.json", ".json"), ("drift_report.md", ".md")):
            check_output(args.output / name, force=replace, error=QuantizeError, suffix=suffix, inputs=inputs,
                         option="--output")
        source = source_from_args(args)
        given_int8: dict[str, Path] = {}
        for path in args.int8 or ():
            row = path.stem.split("_int8")[-1].strip("_") or path.stem
            if row in given_int8:  # one row per name: the second file would silently replace the first
                raise QuantizeError(f"--int8 {given_int8[row]} and {path} would both be the row 'INT8 {row}'; "
                                    "rename one (the row is the part of the name after _int8_)")
            given_int8[row] = read_int8(path, args.onnx, args.weights)
        weights = args.weights or default_weights_path()
        check_int8_source(given_int8.values(), weights)  # another model's INT8 file was scored as this one's
        loaded = load_checkpoint(weights)
        fp32 = ensure_fp32_onnx(args.onnx, weights)
        fp16 = None if args.no_fp16 else ensure_fp16_onnx(fp32, Path(weights))
        if args.int8 is not None:
            int8 = given_int8
        else:
            int8 = {}
            for flavour in FLAVOURS:
                path = default_int8_path(fp32, flavour)
                if wait_while_written(path):  # calibration.quantize writing it now: measured once written
                    log.info("waited for another run's quantization of %s", path)
                if not path.is_file():
                    quantize_int8(fp32, path, source, flavour, exclude_groups=DEFAULT_EXCLUDE[flavour])
                elif given := calibration_options_given(parser, args):
                    log.warning("%s exists and is measured as it was quantized: %s apply only to a file quantized "
                                "now (python -m calibration.quantize --flavour %s --force with them)", path,
                                ", ".join(given), flavour)
                stale = stale_source(read_onnx_metadata(path), path, weights)
                if stale:
                    raise QuantizeError(f"{stale}; re-quantize it: python -m calibration.quantize --flavour {flavour} "
                                        "--force")
                int8[flavour] = path
        report = build_report(loaded.model, Path(weights), loaded.config, fp32, fp16, int8, args.limit,
                              not args.no_speed, args.full, args.threads, not args.no_fp16, progress=log.info)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP (@stoppable); first: command_errors() imports
        return stopped_line(exc, f"no report written to {args.output}")  # torch, which a stop may have cut short
    except (*command_errors(), FileNotFoundError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    from banet.outputs import write_error

    text = markdown(report)  # both encoded before anything is written
    files = {args.output / "drift_report.json": json.dumps(report, indent=2).encode(),
             args.output / "drift_report.md": text.encode()}
    try:  # the pair together (a full disk leaves the previous pair readable, never a new .json with an old .md)
        args.output.mkdir(parents=True, exist_ok=True)
        write_together(files)
    except OSError as exc:
        print(f"error: {write_error(exc, Path(exc.filename or args.output))}", file=sys.stderr)
        return 1
    print(text)
    print(f"wrote {args.output / 'drift_report.json'} and drift_report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
