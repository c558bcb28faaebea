"""Export a BANet to ONNX (FP32 or FP16, dynamic or static shapes) and prove it matches PyTorch.

The library behind ``export/to_onnx.py``. The file is written under a temporary name, checked (ONNX checker,
shape inference), run with ONNX Runtime against PyTorch on a sweep of shapes, and only renamed to its final
name when every shape passes: a graph that is right only at its traced size is never written as a success.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from banet.config import BANetConfig
from banet.conventions import BANET
from banet.folding import fold_attention, is_folded
from banet.metadata import ModelMetadata
from banet.model import BANet
from banet.outputs import check_output, removed_on_write_error
from banet.pooling import MAX_LENGTH
from banet.shapes import batch_problem, sweep_problem
from export.onnx_file import claim_staging, refused_path, write_onnx_metadata, writing
from export.parity import DEFAULT_SWEEP, Forward, ParityReport, compare
from export.reference_cache import cached_forward
from export.runtime_forwards import onnxruntime_forward, openvino_forward

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "input", "output"
MIN_OPSET, MAX_OPSET = 13, 21
#: Default pass thresholds of the built-in verification, per precision.
THRESHOLDS = {"fp32": (80.0, 1e-4), "fp16": (45.0, None)}


class ExportError(RuntimeError):
    """An export that cannot be done or did not verify; the message says why and what to change."""


class HalfPrecisionBANet(nn.Module):
    """FP16 weights and compute with FP32 input and output.

    Kept in float32, by measurement (``python -m calibration.fp16 --full``): the global residual add
    ``residual(x) + x``. Rounding the input image and the sum to float16 caps the output near 82 dB PSNR vs FP32;
    with the add in float32 the emulated drift is 83-85 dB for the trained default and 95 dB for the full network
    with random weights. The add is one cheap elementwise op. The index arithmetic of strip pooling is integer
    by construction (see ``banet.pooling``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model.half()

    def forward(self, x: Tensor) -> Tensor:
        return self.net.residual(x.half()).float() + x


@dataclass
class ExportOptions:
    opset: int = 17
    precision: str = "fp32"
    static_hw: tuple[int, int] | None = None
    batch: int | None = None
    min_size: int = 2  # the size multiple: the graph runs (and is verified) down to 2x2
    max_size: int = 4096
    simplify: bool = False
    exporter: str = "torchscript"
    verify_shapes: Sequence[tuple[int, int, int]] = field(default_factory=lambda: list(DEFAULT_SWEEP))
    min_psnr_db: float | None = None
    max_abs_error: float | None = None
    force: bool = False
    #: also verify the file on OpenVINO's CPU plugin, compiled per shape and for dynamic shapes
    check_openvino: bool = False
    #: export the blur-aware attention folded (:mod:`banet.folding`: same function, fewer operations, 8-14% faster
    #: on CPUs); False keeps the trained module tree in the graph
    fold_attention: bool = True

    def __post_init__(self) -> None:
        # A static size fixes the batch too (1 unless given): the graph, its name (_HxW_b1) and its recorded
        # static shape (1, H, W) then agree; before, the graph kept a dynamic batch under that name and record.
        if self.static_hw is not None and self.batch is None:
            self.batch = 1


def validate_options(options: ExportOptions) -> None:
    """Refuse, before any work, what the network or ONNX cannot take."""
    multiple = BANET.size_multiple
    if options.precision not in THRESHOLDS:
        raise ExportError(f"unknown precision {options.precision!r}; choose one of {sorted(THRESHOLDS)}")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise ExportError(f"opset {options.opset} cannot express this graph with the exporters used here "
                          f"(supported: {MIN_OPSET}..{MAX_OPSET}; 17 is the default)")
    if options.static_hw is not None:
        h, w = options.static_hw
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise ExportError(f"static size {h}x{w} cannot be taken by BANet: height and width must be positive "
                              f"multiples of {multiple} (one stride-2 stage down and up); pad the image, e.g. "
                              f"{max(multiple, h + (-h) % multiple)}x{max(multiple, w + (-w) % multiple)}")
        if max(h, w) > options.max_size:  # traced and verified at full size: 720x1280 already peaks at 6.2 GB
            raise ExportError(f"static size {h}x{w} is larger than --max-size {options.max_size}: a static export "
                              "is traced and verified at its full size (720x1280 peaked at 6.2 GB of memory); "
                              "raise --max-size if you mean it, or export dynamic shapes and let the runtime tile")
    elif problem := sweep_problem(options.verify_shapes, check_batch=options.batch is None):  # --batch replaces N
        raise ExportError(problem)
    if options.min_psnr_db is not None and not math.isfinite(options.min_psnr_db):
        raise ExportError(f"--min-psnr must be a finite number of dB, got {options.min_psnr_db}")
    if options.max_abs_error is not None and not options.max_abs_error >= 0:  # NaN fails this too
        raise ExportError(f"--max-abs-error must be >= 0, got {options.max_abs_error}")
    if options.batch is not None and options.batch < 1:
        raise ExportError(f"--batch must be >= 1, got {options.batch}")
    if options.batch is not None and (problem := batch_problem(options.batch, *(options.static_hw or ()))):
        raise ExportError(f"--batch {options.batch}: {problem}")
    if options.check_openvino:
        from runtime.backends.base import BackendUnavailableError
        from runtime.backends.openvino_backend import import_openvino

        try:
            import_openvino()
        except BackendUnavailableError as exc:
            raise ExportError(f"--check-openvino: {exc}") from None
    if options.max_size > MAX_LENGTH:
        raise ExportError(f"--max-size {options.max_size} is over {MAX_LENGTH}, the longest side the strip pooling's "
                          "index arithmetic is exact for in the int32 arithmetic some runtimes use (banet.pooling); "
                          "larger images run in tiles (the runtime tiles them)")
    if options.min_size < multiple or options.min_size > options.max_size:
        raise ExportError(f"dynamic size bounds {options.min_size}..{options.max_size} are invalid "
                          f"(need {multiple} <= min <= max)")
    if options.exporter not in ("torchscript", "dynamo"):
        raise ExportError(f"unknown exporter {options.exporter!r}: torchscript or dynamo")


def check_output_path(path: Path, force: bool) -> None:
    """Refuse to overwrite without ``force``; fail early on a path that cannot be written."""
    check_output(path, force=force, error=ExportError, suffix=".onnx")


def verification_shapes(options: ExportOptions) -> list[tuple[int, int, int]]:
    """The sweep an export is held to: the user's shapes within the declared bounds, or the static shape."""
    if options.static_hw is not None:
        return [(options.batch or 1, *options.static_hw)]
    shapes = []
    for n, h, w in options.verify_shapes:
        if options.min_size <= min(h, w) and max(h, w) <= options.max_size:
            shapes.append((options.batch or n, h, w))
    if not shapes:
        raise ExportError(f"no verification shape lies within the size bounds {options.min_size}..{options.max_size}")
    return shapes


def torch_forward(model: nn.Module) -> Forward:
    """PyTorch reference forward of an in-memory model: the torch backend's ``run`` (the same code that runs a
    checkpoint in the runtime), on CPU, in the model's own precision."""
    from banet.torch_backend import TorchBackend

    return TorchBackend.from_model(model).run


def _trace(module: nn.Module, path: Path, options: ExportOptions) -> None:
    batch = options.batch or 1
    # The tracer runs the module once: float16 convolutions on a CPU are so slow that tracing the full network
    # at 64x64 takes ~40 s, at 16x16 ~16x less. The graph is size-generic either way, and verified after.
    h, w = options.static_hw or ((16, 16) if options.precision == "fp16" else (64, 64))
    example = torch.zeros(batch, 3, h, w)
    dynamic_axes = None
    if options.static_hw is None or options.batch is None:
        axes = {} if options.batch is not None else {0: "batch"}
        if options.static_hw is None:
            axes.update({2: "height", 3: "width"})
        dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: dict(axes)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if options.exporter == "torchscript":
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=options.opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        else:
            dims = None
            if dynamic_axes:
                dim = torch.export.Dim
                spec = {}
                if 0 in dynamic_axes[INPUT_NAME]:
                    spec[0] = dim("batch", min=1, max=64)
                if options.static_hw is None:
                    spec[2] = 2 * dim("half_height", min=options.min_size // 2, max=options.max_size // 2)
                    spec[3] = 2 * dim("half_width", min=options.min_size // 2, max=options.max_size // 2)
                dims = {"x": spec}
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=options.opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dims)
            program.save(str(path), external_data=False)


def _export_checked(model: nn.Module, output: Path, tmp: Path, options: ExportOptions,
                    shapes: list[tuple[int, int, int]], source_sha256: str, source_name: str,
                    config: BANetConfig) -> ParityReport:
    """The export behind :func:`export_onnx`, staged at ``tmp``: trace, check, verify, then rename to ``output``."""
    import onnx

    traced = fold_attention(model) if options.fold_attention and isinstance(model, BANet) else model
    module = HalfPrecisionBANet(copy.deepcopy(traced)) if options.precision == "fp16" else traced
    started = time.perf_counter()
    try:
        _trace(module, tmp, options)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx ({options.exporter}) could not export at opset {options.opset}: "
                          f"{first}") from exc
    export_seconds = time.perf_counter() - started

    proto = onnx.load(str(tmp))
    if options.simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"the exported graph failed the ONNX checker / shape inference: {exc}") from exc
    metadata = ModelMetadata(
        conventions=BANET, config=config, precision=options.precision, source_sha256=source_sha256,
        source_name=source_name, exporter=f"torch.onnx {options.exporter} (torch {torch.__version__}, "
                                          f"onnx {onnx.__version__})", opset=options.opset,
        input_name=INPUT_NAME, output_name=OUTPUT_NAME,
        shape_mode="static" if options.static_hw else "dynamic",
        static_shape=(options.batch or 1, *options.static_hw) if options.static_hw else None,
        min_size=min(options.static_hw) if options.static_hw else options.min_size,
        max_size=max(options.static_hw) if options.static_hw else options.max_size,
        attention="folded" if isinstance(traced, BANet) and is_folded(traced) else "trained",
        extra={"batch": str(options.batch) if options.batch else "dynamic"})
    write_onnx_metadata(proto, metadata)
    proto.doc_string = f"BANet ({config.describe()}) exported by banet-deploy"
    with removed_on_write_error(tmp, output, ExportError):
        onnx.save(proto, str(tmp))

    min_psnr, max_abs = THRESHOLDS[options.precision]
    min_psnr = options.min_psnr_db if options.min_psnr_db is not None else min_psnr
    max_abs = options.max_abs_error if options.max_abs_error is not None else max_abs
    # the model as given (the trained form): the verification also checks the folding
    reference = cached_forward(torch_forward(model), model)  # the FP16 export after the FP32 one: read, not rerun
    report = compare(reference, onnxruntime_forward(tmp), shapes, min_psnr, max_abs,
                     reference_name="PyTorch FP32", candidate_name=f"ONNX Runtime {options.precision.upper()}")
    if options.check_openvino:
        report.others = [compare(reference, openvino_forward(tmp, static=static, compile_cache=None), shapes,
                                 min_psnr, max_abs, reference_name="PyTorch FP32",
                                 candidate_name=f"OpenVINO {options.precision.upper()} ({mode})")
                         for static, mode in ((True, "compiled per shape"), (False, "dynamic shapes"))]
    log.info("exported in %.1f s; verification:\n%s", export_seconds, report.table())
    if not report.passed:
        failed = refused_path(output)
        os.replace(tmp, failed)
        raise ExportError(f"verification failed, the graph does not match PyTorch on every shape; it was left "
                          f"at {failed} for inspection, nothing written to {output}:\n{report.table()}")
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "banet.parity", json.dumps(
        {"reference": report.reference, "worst_psnr_db": round(report.worst_psnr_db, 2),
         "max_abs_error": max(r.max_abs_error for r in report.results),
         "shapes": ["x".join(map(str, r.shape)) for r in report.results]})
    with removed_on_write_error(tmp, output, ExportError):
        onnx.save(proto, str(tmp))
    os.replace(tmp, output)
    return report


def export_onnx(model: nn.Module, output: Path, options: ExportOptions, source_sha256: str, source_name: str,
                config: BANetConfig) -> tuple[Path, ParityReport]:
    """Export, check, verify against PyTorch, and only then move the file to ``output``.

    Raises :class:`ExportError` on any failure; a graph that failed verification is left next to the output as
    ``<name>.failed.onnx`` for inspection, never under the requested name; whatever stops it (an error,
    Ctrl-C) leaves no staged file behind. Another run writing ``output`` at the same time is refused
    (:func:`export.onnx_file.writing`).
    """
    validate_options(options)
    output = Path(output)
    check_output_path(output, options.force)
    model = model.eval().float()
    shapes = verification_shapes(options)
    with writing(output, ExportError):  # a second run on this output is refused, never mixed with this one
        check_output_path(output, options.force)  # again, now that no other run can write it meanwhile
        try:
            tmp = claim_staging(output)
        except OSError as exc:
            raise ExportError(f"cannot stage {output}: {exc.strerror or exc}") from None
        try:  # whatever stops the export (a failure, Ctrl-C), nothing staged stays behind
            report = _export_checked(model, output, tmp, options, shapes, source_sha256, source_name, config)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return output, report

