"""What a build needs to know about its ONNX (inputs, dynamic dimensions, metadata), shape and target parsing, and
the optimisation-profile checks."""


from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from banet.conventions import BANET
from banet.hashing import file_sha256
from banet.manifest import (
    RTX_KNOWN_TARGETS,
    Profile,
    target_to_cc,
)
from banet.metadata import ModelMetadata
from banet.outputs import shown_path as show
from banet.shapes import batch_problem, parse_nhw
from export.artifact_chain import export_command
from export.trt.runtime_info import PlanError

log = logging.getLogger(__name__)


#: Default optimisation profile (N, H, W): 256x256 up to 1080p, batches up to 4.
DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX = (1, 256, 256), (1, 720, 1280), (4, 1080, 1920)


#: Export defaults of export/to_onnx.py, for validating a plan whose ONNX will be exported first.
EXPORT_MIN_SIZE, EXPORT_MAX_SIZE = 2, 4096


INT8_COMMAND = "python -m calibration.quantize --flavour trt"


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"NxHxW"``, ``"HxW"`` (batch 1) or ``"Nx3xHxW"`` -> (N, H, W) (:func:`banet.shapes.parse_nhw`)."""
    return parse_nhw(text)


def nchw(shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
    return (shape[0], 3, shape[1], shape[2])


def shape_text(shape: Iterable[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


@dataclass(frozen=True)
class OnnxInfo:
    """What the plan needs to know about the ONNX a build starts from."""

    path: Path
    exists: bool
    metadata: ModelMetadata | None
    input_name: str
    #: the input's dimensions: an int where static, the dimension's name where dynamic
    input_dims: tuple
    qdq_nodes: int = 0
    sha256: str | None = None
    size: int = 0
    metadata_note: str = ""

    @property
    def precision(self) -> str:
        if self.qdq_nodes:
            return "int8"
        return self.metadata.precision if self.metadata else "fp32"

    @property
    def min_size(self) -> int:
        return self.metadata.min_size if self.metadata else EXPORT_MIN_SIZE

    @property
    def max_size(self) -> int:
        return self.metadata.max_size if self.metadata else EXPORT_MAX_SIZE

    @property
    def size_multiple(self) -> int:
        return self.metadata.conventions.size_multiple if self.metadata else BANET.size_multiple


def read_onnx_info(path: Path, fallback_metadata: Path | None = None) -> OnnxInfo:
    """Read the input signature, Q/DQ node count and banet metadata of an ONNX file (weights not loaded).

    A quantized ONNX whose tool dropped the ``banet.*`` metadata borrows it from ``fallback_metadata`` (the FP32
    ONNX it was made from), noted in ``metadata_note``.
    """
    from banet.metadata import read_onnx_metadata
    from export.onnx_file import check_banet_graph, load_onnx

    path = Path(path)
    note = ""
    try:
        model = load_onnx(path)
        try:
            metadata = ModelMetadata.from_props({e.key: e.value for e in model.metadata_props}, str(path))
        except (KeyError, ValueError):
            if fallback_metadata is None or not Path(fallback_metadata).is_file():
                raise
            metadata = read_onnx_metadata(fallback_metadata)
            note = f"banet metadata taken from {fallback_metadata} ({path.name} carries none)"
        check_banet_graph(model, metadata, str(path))
    except (FileNotFoundError, KeyError, ValueError) as exc:  # ArtifactError is a ValueError
        raise PlanError(str(exc).strip("'\"")) from None
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1:
        raise PlanError(f"{path}: expected one network input, found {[i.name for i in inputs]}")
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise PlanError(f"{path}: input {inputs[0].name!r} has {len(dims)} dimensions, expected NCHW")
    qdq = sum(1 for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    return OnnxInfo(path, True, metadata, inputs[0].name, dims, qdq, file_sha256(path), path.stat().st_size, note)


def read_given_onnx(path: Path, fallback_metadata: Path | None, precision: str, weights: Path | None) -> OnnxInfo:
    """The ``--onnx`` a user named: it must be there (never exported under a mistyped name), with the command
    that makes it when it is not."""
    if not Path(path).exists():
        make = (f"{INT8_COMMAND} --output {show(path)}" if precision == "int8" else
                f"{export_command(weights, precision)} --output {show(path)}")
        raise PlanError(f"{path}: ONNX file not found; make it with {make}")
    return read_onnx_info(path, fallback_metadata)


def expected_onnx_info(path: Path, precision: str) -> OnnxInfo:
    """The ONNX ``export/to_onnx.py`` will write (dynamic N, H, W, its default size bounds)."""
    return OnnxInfo(Path(path), False, None, "input", ("batch", 3, "height", "width"),
                    metadata_note=f"not there yet: exported first ({precision}) by the build")


def validate_profile(minimum: tuple, opt: tuple, maximum: tuple, onnx: OnnxInfo) -> Profile:
    """Check (N, H, W) min/opt/max against each other, the ONNX's dimensions and the network's size multiple."""
    names = ("batch", "height", "width")
    for label, shape in (("--min", minimum), ("--opt", opt), ("--max", maximum)):
        if len(shape) != 3 or any(int(v) < 1 for v in shape):
            raise PlanError(f"{label} {shape_text(shape)}: every dimension must be >= 1")
        if problem := batch_problem(*shape):
            raise PlanError(f"{label} {shape_text(shape)}: {problem}")
    for i, name in enumerate(names):
        if not minimum[i] <= opt[i] <= maximum[i]:
            raise PlanError(f"profile {name}: need min <= opt <= max, got {minimum[i]} / {opt[i]} / {maximum[i]} "
                            f"(--min {shape_text(minimum)} --opt {shape_text(opt)} --max {shape_text(maximum)})")
    multiple = onnx.size_multiple
    for label, shape in (("--min", minimum), ("--opt", opt), ("--max", maximum)):
        for i in (1, 2):
            if shape[i] % multiple:
                raise PlanError(f"{label} {shape_text(shape)}: {names[i]} {shape[i]} is not a multiple of "
                                f"{multiple}, which BANet needs (one stride-2 stage down and up); use "
                                f"{shape[i] + (-shape[i]) % multiple}")
    onnx_dims = (onnx.input_dims[0], onnx.input_dims[2], onnx.input_dims[3])
    if isinstance(onnx.input_dims[1], int) and onnx.input_dims[1] != 3:
        raise PlanError(f"{onnx.path}: input has {onnx.input_dims[1]} channels, BANet takes 3")
    for i, name in enumerate(names):
        dim = onnx_dims[i]
        if isinstance(dim, int) and dim > 0:
            if not minimum[i] == opt[i] == maximum[i] == dim:
                raise PlanError(f"{onnx.path.name} has a static {name} of {dim}: the profile must use {dim} for it "
                                f"(min/opt/max {name} given: {minimum[i]}/{opt[i]}/{maximum[i]})")
        elif i > 0:
            lo, hi = onnx.min_size, onnx.max_size
            if minimum[i] < lo or maximum[i] > hi:
                raise PlanError(f"profile {name} {minimum[i]}..{maximum[i]} is outside the {lo}..{hi} the ONNX "
                                f"was exported and verified for (re-export with --min-size/--max-size)")
    return Profile(onnx.input_name, nchw(minimum), nchw(opt), nchw(maximum))


def parse_targets(text: str | None) -> tuple[str, ...]:
    """``"sm75,sm86"`` -> ("sm75", "sm86"); also accepts ``7.5`` and ``75``. Unknown targets are refused."""
    if not text:
        return ()
    targets = []
    for raw in text.replace(" ", "").split(","):
        if not raw:
            continue
        item = raw.lower()
        if "." in item and item.replace(".", "").isdigit():
            item = "sm" + item.replace(".", "")
        elif item.isdigit():
            item = "sm" + item
        try:
            target_to_cc(item)
        except ValueError as exc:
            raise PlanError(f"unknown target {raw!r}: {exc}; TensorRT for RTX targets are "
                            f"{', '.join(RTX_KNOWN_TARGETS)}") from exc
        if item not in RTX_KNOWN_TARGETS:
            raise PlanError(f"unknown target {raw!r}: TensorRT for RTX compiles for {', '.join(RTX_KNOWN_TARGETS)} "
                            "(sm75 Turing, e.g. RTX 2080 Ti; sm86 Ampere; sm89 Ada; sm120 Blackwell RTX)")
        if item not in targets:
            targets.append(item)
    return tuple(targets)


