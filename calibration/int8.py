"""INT8 by explicit quantization: a Q/DQ ONNX model made with ONNX Runtime's quantization tools.

Weights are quantized per output channel, symmetric int8; activations per tensor, with ranges calibrated on
:mod:`calibration.data` (minmax, entropy or percentile). Three flavours of the same graph, because one does not
serve every backend (measured on this CPU, see ``docs``/README):

* ``ort``: unsigned asymmetric activations (U8S8): what ONNX Runtime's x86 int8 kernels are fast with.
  Conv/ConvTranspose and the elementwise ops around them are quantized, so int8 tensors flow between layers.
  The decoder's ConvTranspose is first rewritten as a Conv + DepthToSpace (:mod:`calibration.subpixel`): neither
  CPU engine has an int8 ConvTranspose (measured in ``benchmarks/results/subpixel-int8_AMD-EPYC_2026-12-06.md``).
* ``trt``: TensorRT's explicit-quantization rules (:data:`TRT_OPTIONS` says which rule each option follows):
  signed symmetric activations (S8S8, zero point 0) on the inputs of Conv/ConvTranspose only, per-channel
  symmetric weights on the output-channel axis, float biases, no Q/DQ on convolution outputs, and the residual
  inputs of the adds that follow a convolution quantized. This is the file a TensorRT INT8 build takes; it is
  parsed with NVIDIA's ONNX parser before it is kept (:func:`check_tensorrt_conformance`).
* ``ov``: made by NNCF, OpenVINO's own quantizer (:mod:`calibration.nncf_quantize`), which places Q/DQ where
  OpenVINO's CPU plugin runs every convolution in int8 (on the ``ort`` file it keeps some in f32). Its own
  ranges (NNCF's performance preset); the global residual add stays in float.

Never quantized, whatever the flavour: the strip-pooling index arithmetic (shape-derived integer operations and
the averaging division that build the pooling and selection matrices) and the pooling
MatMuls (their averaging matrices depend on the image size, so a range calibrated at one size clips at
another). Only nodes on the image data path are candidates (:func:`quantizable_nodes`).

Calibrated tensor ranges are cached (``$BANET_CACHE/calibration/ranges-*.json``) keyed by the FP32 model's
sha256, the calibration source, the method and the flavour, so re-quantizing (different exclusions, the
sensitivity search) does not recalibrate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from banet.artifacts import int8_onnx_path
from banet.hashing import file_sha256
from banet.metadata import ModelMetadata
from banet.outputs import check_output, removed_on_write_error
from calibration.data import CalibrationDataError, CalibrationSource
from calibration.subpixel import depth_to_space_in_int8, rewrite_conv_transposes
from export.onnx_file import claim_staging, refused_path, writing

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
#: Default verification shapes (N, H, W) of a quantized model against FP32 ONNX Runtime: square, odd sizes
#: where nearest-resize rounding differs, batch > 1.
VERIFY_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 128, 128), (2, 38, 50), (1, 64, 250))
#: Calibration batches run per chunk. ONNX Runtime's calibrators hold every intermediate tensor of a chunk in
#: memory: 32 images of 256x256 at once took over 19 GB with the entropy method on the default network.
CALIBRATION_CHUNK = 4
#: A quantized model drifting more than this from FP32 on any verification shape is refused (dB PSNR).
MIN_VERIFY_PSNR_DB = 25.0


class QuantizeError(RuntimeError):
    """Quantization that cannot be done or did not verify; the message says why and what to change."""


#: ONNX Runtime ``extra_options`` of the ``trt`` flavour, each following a rule of NVIDIA's TensorRT developer
#: guide ("Working with Quantized Types" / "Explicit Quantization", and its Q/DQ layer-placement
#: recommendations). Checked on the written file by tests/calibration/test_quantize.py.
TRT_OPTIONS: dict[str, object] = {
    # TensorRT's quantization is symmetric: zero points must be 0, for activations and weights alike (its
    # parser refuses a non-zero zero point).
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    # No bias quantization: TensorRT's parser accepts DequantizeLinear only on 8-bit (and FP8/4-bit) inputs and
    # refuses ONNX Runtime's int32 bias ("input has type Int32 but must have type FP8, FP4, Int4, Int8, or
    # UInt8"); the guide keeps biases in high precision and TensorRT folds them into the fused convolution.
    "QuantizeBias": False,
    # "By default, don't quantize the outputs of weighted operations": TensorRT fuses what follows a
    # convolution (bias, LeakyReLU, the residual add) into it and quantizes the fused output itself where the
    # next layer's input Q/DQ asks for it.
    "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose"],
    # Per-channel weight scales on the output-channel axis: dimension 0 of a Conv weight (out, in, kh, kw),
    # dimension 1 of a ConvTranspose weight (in, out, kh, kw). ONNX Runtime 1.32's Conv quantizer picks these
    # axes itself and does not read this mapping; it is stated so that no version can pick another silently.
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
    # One Q/DQ pair per tensor, shared by all its consumers. The residual input of each add that follows a
    # convolution (a BAM's input, the network's input for the global residual) is also the input of a
    # quantized convolution, so the add reads the same dequantized tensor: the guide's "quantize the residual
    # input in skip connections", which lets TensorRT fuse the add into the convolution before it (and emit
    # int8 from the fusion when a Q follows). The convolution branch of the add stays unquantized.
    "DedicatedQDQPair": False,
    # Keep activations explicit (ONNX Runtime may drop a Relu/Clip it deems removable after a Q): TensorRT
    # fuses them itself, and the graph must compute the same function with or without Q/DQ.
    "QDQKeepRemovableActivations": True,
}


@dataclass(frozen=True)
class Flavour:
    """How a Q/DQ model is quantized for one backend."""

    name: str
    signed_activations: bool
    op_types: tuple[str, ...]
    description: str
    options: dict = field(default_factory=dict)
    #: the file is meant for TensorRT: NVIDIA's ONNX parser must accept it before it is kept
    tensorrt: bool = False
    #: the decoder's ConvTranspose becomes a Conv + DepthToSpace before calibration (:mod:`calibration.subpixel`:
    #: CPU engines have no int8 ConvTranspose; TensorRT has one)
    subpixel: bool = False
    #: who places the Q/DQ pairs and calibrates: "onnxruntime" (``quantize_static``, ranges cached) or "nncf"
    #: (:mod:`calibration.nncf_quantize`, OpenVINO's quantizer)
    quantizer: str = "onnxruntime"
    #: blocks this flavour always keeps in float, whatever ``exclude_groups`` says
    float_groups: tuple[str, ...] = ()

    def quant_types(self):
        from onnxruntime.quantization import QuantType

        return (QuantType.QInt8 if self.signed_activations else QuantType.QUInt8), QuantType.QInt8

    def extra_options(self, method: str, percentile: float) -> dict:
        """ONNX Runtime ``extra_options``: the flavour's own, plus the calibration method's."""
        options = {"ActivationSymmetric": self.signed_activations, "WeightSymmetric": True, **self.options}
        if method == "percentile":
            options["CalibPercentile"] = percentile
        return options


FLAVOURS: dict[str, Flavour] = {
    "ort": Flavour("ort", False, ("Conv", "ConvTranspose", "Add", "Mul", "Concat", "LeakyRelu", "Relu", "Sigmoid"),
                   "U8S8 for ONNX Runtime CPU: uint8 asymmetric activations, int8 per-channel symmetric weights",
                   subpixel=True),
    # Only the inputs of the weighted operations (Conv, ConvTranspose) get Q/DQ: the guide's first placement
    # rule ("quantize all inputs of weighted operations"); TensorRT runs the rest in float or fuses it.
    "trt": Flavour("trt", True, ("Conv", "ConvTranspose"),
                   "S8S8 for TensorRT: int8 symmetric activations on Conv/ConvTranspose inputs, int8 per-channel "
                   "symmetric weights, float biases", options=TRT_OPTIONS, tensorrt=True),
    # NNCF picks what it quantizes among these (OpenVINO's CPU rules); the op types name the nodes --exclude and
    # the sensitivity search can keep in float. The global residual add stays in float: NNCF's activation
    # ranges (mean of per-image extremes) clip the input's brightest pixels, which that add would carry to the
    # output (while choosing, ad hoc on a 720x1280 photo: 35.6 dB from FP32 with it quantized, 47.0 dB without).
    "ov": Flavour("ov", True, ("Conv", "ConvTranspose", "Add", "Mul", "Concat", "MatMul", "ReduceMean"),
                  "NNCF for OpenVINO CPU: int8 symmetric activations where OpenVINO's CPU plugin fuses them, "
                  "int8 per-channel symmetric weights", quantizer="nncf", float_groups=("global_residual",)),
}


# --------------------------------------------------------------------------------------------------------------
# Which nodes, and their blocks
# --------------------------------------------------------------------------------------------------------------

def data_path_nodes(graph) -> set[str]:
    """Names of nodes whose outputs depend on the image values (not only on its shape).

    ``Shape``/``Size`` cut the dependence, so the strip-pooling index arithmetic built from them is excluded.
    """
    data = {i.name for i in graph.input}
    nodes = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in ("Shape", "Size"):
            continue
        if any(name in data for name in node.input):
            data.update(node.output)
            nodes.add(node.name)
    return nodes


def quantizable_nodes(model, flavour: Flavour) -> list[str]:
    """Nodes a flavour quantizes: its op types, on the image data path, never the pooling MatMuls."""
    on_path = data_path_nodes(model.graph)
    names = [n.name for n in model.graph.node if n.op_type in flavour.op_types and n.name in on_path]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise QuantizeError("the ONNX graph has unnamed or duplicate node names; re-export it with "
                            "export/to_onnx.py")
    return names


def group_of(node_name: str) -> str:
    """The block a node belongs to, from the PyTorch module path in its ONNX name.

    ``/BAM_2/BA/mask_conv_1/Conv`` -> ``BAM_2/BA.mask``; ``/BAM_2/content_conv_d3/Conv`` -> ``BAM_2/CPDC``;
    ``/de_layer3/de_layer3.0/Conv`` -> ``de_layer3``; the top-level ``/Add`` (global residual add) ->
    ``global_residual`` and ``/Concat`` (decoder skip concat) -> ``skip_concat``.
    """
    parts = [p for p in node_name.split("/") if p]
    scopes = parts[:-1]
    if not scopes:
        op = parts[-1].split("_")[0] if parts else ""
        return {"Add": "global_residual", "Concat": "skip_concat"}.get(op, "top")
    top = scopes[0]
    if not top.startswith("BAM_") or len(scopes) == 1:
        return top if not top.startswith("BAM_") else f"{top}/fusion"
    sub = scopes[1]
    if sub == "BA":
        return f"{top}/BA.mask" if len(scopes) > 2 and scopes[2].startswith("mask_conv") else f"{top}/BA"
    if sub.startswith("content_conv") or sub == "fuse_conv_1":
        return f"{top}/CPDC"
    if sub == "input_conv":
        return f"{top}/input_conv"
    return f"{top}/fusion"


def node_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Nodes by :func:`group_of`, in graph order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(group_of(name), []).append(name)
    return groups


# --------------------------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------------------------

@dataclass
class QuantizedModel:
    """What :func:`quantize_int8` wrote and measured."""

    path: Path
    flavour: str
    method: str
    quantized_nodes: list[str]
    excluded_groups: list[str]
    verification: dict[str, float]
    seconds: float
    calibration: dict = field(default_factory=dict)
    #: the TensorRT parser check (``trt`` flavour): parser and layer count, or why it was skipped
    tensorrt_parse: dict = field(default_factory=dict)

    @property
    def worst_psnr_db(self) -> float | None:
        return min(self.verification.values()) if self.verification else None


class _DropQuantizationChatter(logging.Filter):
    """Drops the warnings ONNX Runtime's quantization tools send to the root logger ("consider pre-processing",
    see README); every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace("\\", "/")
        return record.levelno >= logging.ERROR or "/onnxruntime/quantization/" not in path


@contextlib.contextmanager
def _quiet_onnxruntime_quantization():
    """While quantizing, filter ONNX Runtime's quantization warnings off the root logger (they log with
    ``logging.warning``); the filter is removed on the way out, whatever happens. Nothing global changes."""
    root, chatter = logging.getLogger(), _DropQuantizationChatter()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)


@contextlib.contextmanager
def _calibration_threads(threads: int | None):
    """Run ONNX Runtime's calibration sessions on ``threads`` intra-op threads (it offers no option for it, so its
    session factory is replaced for the duration of the block, and restored on the way out, whatever happens)."""
    from onnxruntime.quantization import calibrate

    original = calibrate.CalibraterBase.create_inference_session
    if not threads:
        yield
        return

    def create_inference_session(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = threads
        self.infer_session = onnxruntime.InferenceSession(self.augmented_model_path, sess_options=options,
                                                          providers=self.execution_providers)

    calibrate.CalibraterBase.create_inference_session = create_inference_session
    try:
        yield
    finally:
        calibrate.CalibraterBase.create_inference_session = original


def _sha256(path: Path) -> str:
    return file_sha256(path)


def ranges_cache_path(fp32_onnx: Path, source: CalibrationSource, flavour: Flavour, method: str,
                      percentile: float, subpixel: bool = False) -> Path:
    """Where the calibrated ranges of this (model, data, method, flavour) live; ``subpixel``: calibrated on the graph
    with its ConvTranspose rewritten (:mod:`calibration.subpixel`), which has a tensor more (a cache made without
    it would lack that tensor's range)."""
    import onnxruntime

    from calibration.data import _cache_root

    key = json.dumps({"model": _sha256(fp32_onnx), "source": source._key(), "method": method,
                      "percentile": percentile if method == "percentile" else None, "ops": flavour.op_types,
                      "subpixel": subpixel, "ort": onnxruntime.__version__}, sort_keys=True)
    return _cache_root() / f"ranges-{method}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    names = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if method not in names:
        raise QuantizeError(f"unknown calibration method {method!r}; choose one of {METHODS}")
    return names[method]


def check_source_fits(metadata, source: CalibrationSource) -> None:
    """A static-shape model can only be calibrated at its own shape, a dynamic one within the sizes it was exported
    and verified for (a larger calibration size is also a memory bomb: the built-in photos are resized up to it,
    and ONNX Runtime keeps every intermediate tensor of a chunk)."""
    h, w = source.size
    if metadata.shape_mode == "static" and metadata.static_shape:
        n, sh, sw = metadata.static_shape
        if (sh, sw) != (h, w) or source.batch != n:
            raise CalibrationDataError(f"the model is static {n}x{sh}x{sw}; calibrate with --calib-size {sh}x{sw} "
                                       f"--calib-batch {n} (got {h}x{w}, batch {source.batch})")
    elif not metadata.min_size <= min(h, w) <= max(h, w) <= metadata.max_size:
        raise CalibrationDataError(f"calibration size {h}x{w} is outside the {metadata.min_size}..{metadata.max_size} "
                                   "the model was exported and verified for; use your engine profile's opt size "
                                   "(e.g. --calib-size 720x1280)")


def nodes_to_quantize(model, spec: Flavour, exclude_groups: Sequence[str]) -> list[str]:
    """The flavour's quantizable nodes of ``model`` minus the excluded blocks; QuantizeError naming an unknown
    block, or when nothing is left."""
    candidates = quantizable_nodes(model, spec)
    groups = node_groups(candidates)
    unknown = sorted(set(exclude_groups) - set(groups))
    if unknown:
        raise QuantizeError(f"unknown group(s) to exclude: {', '.join(unknown)}; groups of this model: "
                            f"{', '.join(groups)}")
    excluded = {name for g in (*exclude_groups, *spec.float_groups) for name in groups.get(g, ())}
    nodes = [n for n in candidates if n not in excluded]
    if not nodes:
        raise QuantizeError("every quantizable node is excluded: nothing to quantize")
    return nodes


def int8_metadata(fp32: ModelMetadata, extra: dict[str, str]) -> ModelMetadata:
    """The INT8 model's metadata: the FP32 export's, precision int8, its parity record kept as ``fp32_parity``."""
    kept = {k: v for k, v in fp32.extra.items() if k != "parity"}
    if "parity" in fp32.extra:
        kept["fp32_parity"] = fp32.extra["parity"]
    return dataclasses.replace(fp32, precision="int8", extra={**kept, **extra})


def _check_and_commit(fp32_onnx: Path, tmp: Path, output: Path, tensorrt: bool,
                      verify_shapes: Sequence[tuple[int, int, int]], min_psnr_db: float,
                      threads: int | None, heldout: bool = True) -> tuple[dict | None, dict[str, float]]:
    """Parser check (``trt`` flavour), drift against FP32 and (``heldout``) the held-out cost on ``tmp``; record
    them in it and rename it to ``output``, or leave it as ``<name>.failed.onnx`` and raise."""
    import onnx

    conformance = check_tensorrt_conformance(tmp, output) if tensorrt else None
    verification = verify_against_fp32(fp32_onnx, tmp, verify_shapes, threads) if verify_shapes else {}
    if verification and min(verification.values()) < min_psnr_db:
        failed = leave_failed(tmp, output)
        raise QuantizeError(f"the INT8 model drifts too far from FP32 ({verification}, dB; needs >= "
                            f"{min_psnr_db:g}); left at {failed}. Exclude sensitive blocks "
                            "(python -m calibration.sensitivity) or try another --method.")
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "banet.int8_verification", json.dumps(
        {"reference": "FP32 ONNX Runtime", "psnr_db": {k: round(v, 2) for k, v in verification.items()}})
    if conformance is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "banet.int8_tensorrt_parse", json.dumps(conformance)
    record = None
    if heldout:
        from banet.errors import first_line
        from calibration.heldout import measure_heldout

        try:
            record = measure_heldout(fp32_onnx, tmp, threads, shown=output.name)
        except Exception as exc:  # an engine that cannot run it, a bad setting: one line, the candidate kept
            failed = leave_failed(tmp, output)
            raise QuantizeError(f"measuring the INT8 model on the held-out photos failed ({type(exc).__name__}: "
                                f"{first_line(exc)}); left at {failed}") from exc
    if record is not None:
        from banet.conventions import METADATA_PREFIX
        from banet.precision import HELDOUT_KEY

        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + HELDOUT_KEY, json.dumps(record)
    with removed_on_write_error(tmp, output, QuantizeError):
        onnx.save(proto, str(tmp))
    os.replace(tmp, output)
    return conformance, verification


def quantize_int8(fp32_onnx: str | os.PathLike, output: str | os.PathLike, source: CalibrationSource,
                  flavour: str = "ort", method: str = "minmax", exclude_groups: Sequence[str] = (),
                  percentile: float = 99.999, force: bool = False,
                  verify_shapes: Sequence[tuple[int, int, int]] = VERIFY_SHAPES,
                  min_verify_psnr_db: float = MIN_VERIFY_PSNR_DB, extra_metadata: dict | None = None,
                  threads: int | None = None, log_level: int = logging.INFO, heldout: bool = True) -> QuantizedModel:
    """Quantize an FP32 ONNX export to a Q/DQ INT8 model, verify it against FP32, write it to ``output``.

    ``heldout``: also measure what it costs on the held-out photos and record it
    (:func:`calibration.heldout.measure_heldout`; what ``Deblurrer(precision="int8")`` checks against the budget).

    ``exclude_groups`` are block names (:func:`group_of`) kept in float. Raises :class:`QuantizeError` (or
    :class:`~calibration.data.CalibrationDataError`); a model that fails verification, or (``trt`` flavour) that
    NVIDIA's ONNX parser refuses (:func:`check_tensorrt_conformance`), is left as ``<name>.failed.onnx`` and
    nothing is written under ``output``. ``threads``: ONNX Runtime intra-op threads
    for calibration and verification (default: ONNX Runtime's choice).
    """
    import onnx

    from banet.metadata import read_onnx_metadata
    from export.onnx_file import write_onnx_metadata

    started = time.perf_counter()
    fp32_onnx, output = Path(fp32_onnx), Path(output)
    if flavour not in FLAVOURS:
        raise QuantizeError(f"unknown flavour {flavour!r}; choose one of {sorted(FLAVOURS)}")
    spec = FLAVOURS[flavour]
    _calibration_method(method)  # an unknown method is refused before anything is read
    if spec.quantizer == "nncf" and method != "minmax":
        raise QuantizeError(f"the {flavour} flavour calibrates with NNCF's own ranges; --method {method} is for the "
                            "ONNX Runtime flavours (ort, trt)")
    if not fp32_onnx.is_file():
        raise QuantizeError(f"{fp32_onnx}: FP32 ONNX model not found (export it with export/to_onnx.py)")
    # even with --force: the reference every INT8 file is measured on
    check_output(output, force=force, error=QuantizeError, suffix=".onnx",
                 inputs={"the FP32 ONNX being quantized": fp32_onnx})
    try:
        metadata = read_onnx_metadata(fp32_onnx)
    except (KeyError, ValueError) as exc:
        raise QuantizeError(str(exc)) from exc
    if metadata.precision != "fp32":
        raise QuantizeError(f"{fp32_onnx} is a {metadata.precision} model; quantize the FP32 export")
    check_source_fits(metadata, source)

    graph = onnx.load(str(fp32_onnx))
    nodes = nodes_to_quantize(graph, spec, exclude_groups)
    # only a ConvTranspose that is quantized: one kept in float runs faster as it is
    rewritten = rewrite_conv_transposes(graph, only=set(nodes)) if spec.subpixel else []
    if rewritten:
        nodes = nodes_to_quantize(graph, spec, exclude_groups)

    output.parent.mkdir(parents=True, exist_ok=True)
    with writing(output, QuantizeError):  # a second run on this output is refused, never mixed with this one
        check_output(output, force=force, error=QuantizeError, suffix=".onnx",  # again, under the lock
                     inputs={"the FP32 ONNX being quantized": fp32_onnx})
        try:
            tmp = claim_staging(output)
        except OSError as exc:
            raise QuantizeError(f"cannot stage {output}: {exc.strerror or exc}") from None
        try:  # whatever stops it (a failure, Ctrl-C), no staged file stays behind; a refused one is left as .failed
            if spec.quantizer == "nncf":
                _quantize_nncf(graph, tmp, source, metadata, spec, nodes)
            else:
                _quantize_onnxruntime(fp32_onnx, graph, tmp, source, metadata, spec, method, percentile, nodes,
                                      rewritten, threads)
            proto = onnx.load(str(tmp))
            if rewritten:
                depth_to_space_in_int8(proto)
            calibration = {"method": method if spec.quantizer == "onnxruntime" else NNCF_RANGES, **source.to_dict()}
            if spec.quantizer == "nncf":
                nodes = quantized_readers(proto)
            if method == "percentile":
                calibration["percentile"] = percentile
            extra = {"int8_flavour": flavour, "int8_format": spec.description,
                     "int8_calibration": json.dumps(calibration),
                     "int8_excluded_groups": json.dumps(sorted(exclude_groups)),
                     "int8_quantized_nodes": str(len(nodes)),
                     "int8_rewrites": json.dumps([f"{name}: Conv + DepthToSpace" for name in rewritten]),
                     **(extra_metadata or {})}
            write_onnx_metadata(proto, int8_metadata(metadata, extra))
            with removed_on_write_error(tmp, output, QuantizeError):
                onnx.save(proto, str(tmp))

            conformance, verification = _check_and_commit(fp32_onnx, tmp, output, spec.tensorrt, verify_shapes,
                                                           min_verify_psnr_db, threads, heldout)
            seconds = time.perf_counter() - started
            log.log(log_level, "wrote %s (%s, %s, %d nodes quantized, excluded %s) in %.1f s; drift vs FP32 %s dB",
                    output, flavour, method, len(nodes), sorted(exclude_groups) or "none", seconds, verification)
            return QuantizedModel(output, flavour, method, nodes, sorted(exclude_groups), verification, seconds,
                                  calibration, conformance or {})
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


#: How the ``ov`` flavour's ranges are calibrated (recorded in the file as its calibration method).
NNCF_RANGES = "nncf performance preset (mean of per-image min/max), fast bias correction"


def quantized_readers(proto) -> list[str]:
    """Names of the nodes of a Q/DQ model that read a dequantized activation (a DequantizeLinear fed by a
    QuantizeLinear, not a weight's): the nodes that run on int8 data, whoever placed the pairs."""
    made_by = {out: node.op_type for node in proto.graph.node for out in node.output}
    dequantized = {node.output[0] for node in proto.graph.node
                   if node.op_type == "DequantizeLinear" and made_by.get(node.input[0]) == "QuantizeLinear"}
    return [node.name for node in proto.graph.node if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(name in dequantized for name in node.input)]


def _quantize_onnxruntime(fp32_onnx: Path, graph, tmp: Path, source: CalibrationSource, metadata: ModelMetadata,
                          spec: Flavour, method: str, percentile: float, nodes: Sequence[str],
                          rewritten: Sequence[str], threads: int | None) -> None:
    """ONNX Runtime's ``quantize_static`` of ``graph`` (the FP32 file's, ConvTranspose ``rewritten`` or not) to
    ``tmp``, its calibrated ranges cached (:func:`ranges_cache_path`)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    cache = ranges_cache_path(fp32_onnx, source, spec, method, percentile, subpixel=bool(rewritten))
    cache.parent.mkdir(parents=True, exist_ok=True)
    reader = None if cache.is_file() else source.reader(metadata.input_name, metadata.conventions)
    if reader is not None:
        log.info("calibrating (%s, %s): %s", method, spec.name, source.describe())
    options = spec.extra_options(method, percentile)
    if reader is not None:  # calibrate in chunks: ORT keeps every intermediate tensor of a chunk in memory
        options["CalibStridedMinMax"] = max(d for d in range(1, CALIBRATION_CHUNK + 1) if len(reader) % d == 0)
    activation_type, weight_type = spec.quant_types()
    source_graph = tmp.with_name(tmp.name + ".subpixel.onnx") if rewritten else fp32_onnx
    try:
        if rewritten:
            onnx.save(graph, str(source_graph))
        with _quiet_onnxruntime_quantization(), _calibration_threads(threads):
            quantize_static(str(source_graph), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=False, activation_type=activation_type, weight_type=weight_type,
                            op_types_to_quantize=list(spec.op_types), nodes_to_quantize=list(nodes),
                            calibrate_method=_calibration_method(method), extra_options=options,
                            calibration_cache_path=str(cache))
    except Exception as exc:
        raise QuantizeError(f"ONNX Runtime quantization failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if rewritten:
            source_graph.unlink(missing_ok=True)


def _quantize_nncf(graph, tmp: Path, source: CalibrationSource, metadata: ModelMetadata, spec: Flavour,
                   nodes: Sequence[str]) -> None:
    """NNCF's quantization of ``graph`` to ``tmp`` (:mod:`calibration.nncf_quantize`): the flavour's candidate
    nodes not in ``nodes`` (excluded blocks, the flavour's float blocks) are NNCF's ignored scope. Calibrated
    afresh each time (about 10 s for the default model on 32 crops of 256x256); nothing is cached."""
    import onnx

    from calibration.nncf_quantize import quantize_with_nncf

    ignored = sorted(set(quantizable_nodes(graph, spec)) - set(nodes))
    log.info("calibrating (NNCF, %s): %s", spec.name, source.describe())
    try:
        proto = quantize_with_nncf(graph, source.batches(metadata.conventions), metadata.input_name, ignored)
    except ModuleNotFoundError as exc:
        raise QuantizeError(f"the {spec.name} flavour is made with NNCF, which is not installed ({exc}); install "
                            "it: pip install nncf (or the export extra: pip install -e '.[export]')") from None
    except Exception as exc:
        raise QuantizeError(f"NNCF quantization failed: {type(exc).__name__}: {exc}") from exc
    del proto.metadata_props[:]  # NNCF's own bookkeeping; the file's record is written by the caller
    onnx.save(proto, str(tmp))


def leave_failed(candidate: Path, output: Path) -> Path:
    """Move a refused model to ``<name>.failed.onnx`` next to ``output`` (never under ``output``), as export does."""
    failed = refused_path(output)
    os.replace(candidate, failed)
    return failed


def check_tensorrt_conformance(candidate: Path, output: Path) -> dict:
    """Parse a TensorRT-bound model with the installed TensorRT-family ONNX parser; refuse it if that fails.

    Why: a Q/DQ graph ONNX Runtime runs can still be one NVIDIA's parser rejects (int32 bias DequantizeLinear,
    non-zero zero points), and that would only show on the user's GPU machine. Raises :class:`QuantizeError`
    with one line naming the node and the parser's reason, the model left as ``<name>.failed.onnx``. Where
    neither ``tensorrt`` nor ``tensorrt_rtx`` is installed the check is skipped, and says so.
    """
    from export.trt.builder import parse_onnx

    report = parse_onnx(candidate)
    if report is None:
        reason = "neither TensorRT (tensorrt) nor TensorRT for RTX (tensorrt_rtx) is installed"
        log.warning("TensorRT parser check skipped: %s", reason)
        return {"skipped": reason}
    if not report.ok:
        failed = leave_failed(candidate, output)
        raise QuantizeError(f"the ONNX parser of {report.parser} refuses the INT8 model at {report.first_error()}; "
                            f"left at {failed}, nothing written to {output}")
    log.info("%s parses the INT8 model (%d layers)", report.parser, report.layers)
    return {"parser": report.parser, "layers": report.layers}


def verify_against_fp32(fp32_onnx: Path, candidate: Path, shapes: Sequence[tuple[int, int, int]],
                        threads: int | None = None) -> dict[str, float]:
    """PSNR (dB) of the candidate's output vs FP32 ONNX Runtime on real-photo inputs of each shape."""
    from export.parity import photo_batch, psnr_db
    from export.runtime_forwards import onnxruntime_forward

    reference, quantized = onnxruntime_forward(fp32_onnx, threads), onnxruntime_forward(candidate, threads)
    out = {}
    for shape in shapes:
        x = photo_batch(*shape)
        result = quantized(x)
        out["x".join(map(str, shape))] = psnr_db(reference(x), result) if np.isfinite(result).all() else 0.0
    return out


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------

#: Blocks kept in float by default, per flavour, measured on the shipped default model (held-out PSNR change vs
#: FP32, 26 crops): ``ort`` with everything quantized loses 0.16 dB, so nothing is kept in float. ``trt`` (symmetric
#: int8 activations) loses 0.34 dB with everything quantized, over the 0.3 dB bound; the decoder's last two
#: full-resolution convolutions in float bring it to 0.22 dB (en_layer1 alone: 0.33, de_layer3 alone: 0.30,
#: de_layer2 alone: 0.25). TensorRT runs the two float convolutions beside the int8 ones.
#: Use ``--auto-exclude DB`` (or ``--exclude``) for a tighter drift budget.
DEFAULT_EXCLUDE: dict[str, tuple[str, ...]] = {"ort": (), "trt": ("de_layer2", "de_layer3"), "ov": ()}


def default_int8_path(fp32_onnx: Path, flavour: str) -> Path:
    """``<stem>_int8_<flavour>.onnx`` next to the FP32 file (:func:`banet.artifacts.int8_onnx_path`)."""
    return int8_onnx_path(fp32_onnx, flavour)
