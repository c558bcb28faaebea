"""Model metadata carried by exported artifacts: one writer, one reader.

The exporter stores this in the ONNX file's ``metadata_props``; the engine builder copies it into engine
manifests; the runtime reads it back to learn the conventions and the network configuration instead of
guessing them. Every key starts with ``banet.``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from banet.config import BANetConfig
from banet.conventions import METADATA_PREFIX, Conventions
from banet.errors import ArtifactError
from banet.hashing import file_sha256
from banet.onnx_wire import summarize_onnx

SCHEMA_VERSION = "1"
#: What the exported graph computes, where runtimes may compute it differently. 1 (no ``banet.graph_revision``
#: key; exports before 2026-12-05): strip pooling's nearest-resize index in float32, which OpenVINO compiling for
#: dynamic shapes rewrites (``n / L`` as ``n * (1 / L)``) so that strips move at some sizes. 2: the integer index
#: of :func:`banet.pooling.nearest_source`, the same on every runtime. Files of an older revision are stale
#: (:func:`stale_source`): re-export them.
GRAPH_REVISION = 2
#: Metadata key marking an app graph (export/to_app.py: uint8 images in and out, pre/post-processing inside).
APP_GRAPH_KEY = METADATA_PREFIX + "graph"


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported model says about itself."""

    conventions: Conventions
    config: BANetConfig
    precision: str  # "fp32" | "fp16" | "int8"
    source_sha256: str
    source_name: str
    exporter: str
    opset: int
    input_name: str = "input"
    output_name: str = "output"
    #: "dynamic" or "static"; with static, ``static_shape`` is (N, H, W).
    shape_mode: str = "dynamic"
    static_shape: tuple[int, int, int] | None = None
    #: inclusive bounds of the dynamic height/width the export was declared and verified for.
    min_size: int = 2
    max_size: int = 4096
    #: :data:`GRAPH_REVISION` of the exporter that wrote the graph (1 for files that do not record one).
    graph_revision: int = GRAPH_REVISION
    #: the blur-aware attention's form in the graph: "trained" (the module tree as trained; files that do not record
    #: one) or "folded" (:mod:`banet.folding`: the same function with fewer operations, one Conv fewer per BAM).
    attention: str = "trained"
    extra: dict[str, str] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        """Flat string key/values for ONNX ``metadata_props`` (and engine manifests)."""
        props = dict(self.conventions.to_metadata())
        props.update({
            METADATA_PREFIX + "schema": SCHEMA_VERSION,
            METADATA_PREFIX + "config": self.config.to_json(),
            METADATA_PREFIX + "precision": self.precision,
            METADATA_PREFIX + "source_sha256": self.source_sha256,
            METADATA_PREFIX + "source_name": self.source_name,
            METADATA_PREFIX + "exporter": self.exporter,
            METADATA_PREFIX + "opset": str(self.opset),
            METADATA_PREFIX + "input_name": self.input_name,
            METADATA_PREFIX + "output_name": self.output_name,
            METADATA_PREFIX + "shape_mode": self.shape_mode,
            METADATA_PREFIX + "static_shape": json.dumps(list(self.static_shape) if self.static_shape else None),
            METADATA_PREFIX + "min_size": str(self.min_size),
            METADATA_PREFIX + "max_size": str(self.max_size),
            METADATA_PREFIX + "graph_revision": str(self.graph_revision),
            METADATA_PREFIX + "attention": self.attention,
        })
        props.update({METADATA_PREFIX + k: v for k, v in self.extra.items()})
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse :meth:`to_props` output; a missing key, or a value that does not parse, raises
        :class:`ArtifactError` in one line naming the key and the file (``source``)."""
        p = METADATA_PREFIX
        if props.get(APP_GRAPH_KEY) == "app":
            raise ArtifactError(f"{source}: an app graph (uint8 images in and out, made by export/to_app.py for apps "
                                "that link only ONNX Runtime); run it with ONNX Runtime itself, and give the "
                                "runtime, engine builds and benchmarks the network ONNX it was made from")

        def get(key: str) -> str:
            if p + key not in props:
                raise ArtifactError(f"{source}: metadata lacks '{p + key}'; it was not exported by banet-deploy's "
                               "export/to_onnx.py (re-export it so conventions are not guessed)")
            return props[p + key]

        if get("schema") != SCHEMA_VERSION:
            raise ArtifactError(f"{source}: metadata schema {get('schema')} is not supported "
                                f"(expected {SCHEMA_VERSION})")
        known = {"schema", "config", "precision", "source_sha256", "source_name", "exporter", "opset", "input_name",
                 "output_name", "shape_mode", "static_shape", "min_size", "max_size", "graph_revision", "attention"}
        conv_keys = set(Conventions().to_metadata())
        extra = {k[len(p):]: v for k, v in props.items()
                 if k.startswith(p) and k[len(p):] not in known and k not in conv_keys}
        for f in fields(Conventions):  # a value that does not parse names its key (a missing one: below)
            if p + f.name in props and f.type in ("int", int, "float", float):
                _parsed(props[p + f.name], p + f.name, source, int if f.type in ("int", int) else float)
        try:
            conventions = Conventions.from_metadata(props)
        except KeyError as exc:
            raise ArtifactError(f"{source}: {exc.args[0]}") from None
        static = _static_shape(get("static_shape"), p + "static_shape", source)
        precision, shape_mode = get("precision"), get("shape_mode")
        attention = props.get(p + "attention", "trained")
        if attention not in ATTENTION_FORMS:
            raise _bad_value(source, p + "attention", f"not one of {', '.join(ATTENTION_FORMS)}", attention)
        if precision not in PRECISIONS:
            raise _bad_value(source, p + "precision", f"not one of {', '.join(PRECISIONS)}", precision)
        if shape_mode not in SHAPE_MODES or (shape_mode == "static") != (static is not None):
            raise _bad_value(source, p + "shape_mode", "not \"dynamic\" (static_shape null) or \"static\" (with a "
                             "static_shape)", shape_mode)
        return cls(conventions=conventions, config=_config(get("config"), p + "config", source),
                   precision=precision, source_sha256=get("source_sha256"), source_name=get("source_name"),
                   exporter=get("exporter"), opset=_parsed(get("opset"), p + "opset", source),
                   input_name=get("input_name"), output_name=get("output_name"), shape_mode=shape_mode,
                   static_shape=static, min_size=_parsed(get("min_size"), p + "min_size", source),
                   max_size=_parsed(get("max_size"), p + "max_size", source),
                   graph_revision=_parsed(props.get(p + "graph_revision", "1"), p + "graph_revision", source),
                   attention=attention, extra=extra)


#: Forms of the blur-aware attention a graph may record (:attr:`ModelMetadata.attention`).
ATTENTION_FORMS = ("trained", "folded")
#: Precisions a model file or engine may record.
PRECISIONS = ("fp32", "fp16", "int8")
#: Input shapes an export takes: any size within its bounds, or exactly its ``static_shape``.
SHAPE_MODES = ("dynamic", "static")
#: What each kind of value must be, as the one-line refusal says it.
_KINDS = {int: "not a whole number", float: "not a number"}


def _bad_value(source: str, key: str, problem: str, raw: object) -> ArtifactError:
    """The one line for a metadata value that does not parse: the file, the key, what is wrong, the value
    (``repr``, so a value with a line break stays on one line; long ones cut)."""
    shown = repr(raw)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ArtifactError(f"{source}: metadata {key}: {problem} ({shown}); re-export it with export/to_onnx.py")


def _parsed(raw: str, key: str, source: str, kind: type = int):
    """``raw`` as an ``int`` or ``float``, or :class:`ArtifactError` naming ``key`` (never the parser's wording)."""
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise _bad_value(source, key, _KINDS[kind], raw) from None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _static_shape(raw: str, key: str, source: str) -> tuple[int, int, int] | None:
    """``null`` or a JSON list of 3 positive whole numbers (N, H, W)."""
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = False  # not JSON: refused below
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 3 and all(_whole(v) and v >= 1 for v in value)):
        raise _bad_value(source, key, "not null or a list of 3 positive whole numbers [N, H, W]", raw)
    return tuple(value)


def _config(raw: str, key: str, source: str) -> BANetConfig:
    """The network configuration: a JSON object of whole numbers (and ``ba_fuse_full`` true or false)."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        raise _bad_value(source, key, "not a JSON object", raw) from None
    if not isinstance(data, dict):
        raise _bad_value(source, key, "not a JSON object", raw)
    types = {f.name: f.type for f in fields(BANetConfig)}
    for name, value in data.items():
        if name not in types:
            raise _bad_value(source, key, f"unknown field {name!r} (expected {', '.join(types)})", raw)
        if types[name] in ("bool", bool) and not isinstance(value, bool):
            raise _bad_value(source, key, f"{name} is not true or false", raw)
        if types[name] in ("int", int) and not _whole(value):
            raise _bad_value(source, key, f"{name} is not a whole number", raw)
    try:
        return BANetConfig.from_dict(data)
    except (TypeError, ValueError) as exc:  # out of range (num_bams 0, odd dim_2): the config's own line
        raise _bad_value(source, key, str(exc).splitlines()[0] if str(exc) else "not a BANet configuration",
                         raw) from None


def expected_conv_nodes(config: BANetConfig, attention: str = "trained") -> int:
    """Conv nodes in an exported BANet graph: 4 outside the BAMs, 18 convolutions per BAM, 3 of them (BA's strip
    convolutions) applied twice (horizontal and vertical strips); the folded attention has no ``fuse_conv`` (one
    fewer per BAM). Quantized and FP16 graphs keep every Conv."""
    return 4 + (20 if attention == "folded" else 21) * config.num_bams


def check_signature(inputs: list[tuple[str, list]], outputs: list[tuple[str, list]], conv_count: int,
                    metadata: ModelMetadata, source: str = "model") -> None:
    """Refuse a graph that carries BANet metadata but is not the network it describes (a foreign ONNX with our
    metadata copied in, or one edited since export): one NCHW 3-channel input and output under the recorded
    names, and the convolution count (Conv + ConvTranspose nodes) of the recorded configuration.

    ``inputs``/``outputs`` are (name, dims) pairs, dims as ints or symbolic names; readers with the ``onnx``
    package and without it (the runtime, :mod:`banet.onnx_wire`) both end here.
    """
    def described(values) -> str:
        return ", ".join(f"{name}[{','.join(str(d) for d in dims)}]" for name, dims in values) or "none"

    for kind, values, name in (("input", inputs, metadata.input_name), ("output", outputs, metadata.output_name)):
        dims = list(values[0][1]) if len(values) == 1 else []
        if len(values) != 1 or values[0][0] != name or len(dims) != 4 or dims[1] != 3:
            raise ArtifactError(f"{source}: not a BANet graph: expected one {kind} {name}[N,3,H,W], found "
                                f"{described(values)}")
    expected = expected_conv_nodes(metadata.config, metadata.attention) + 1  # + the decoder's ConvTranspose
    if conv_count != expected:
        raise ArtifactError(f"{source}: not a BANet graph of the recorded configuration "
                            f"({metadata.config.describe()}): {conv_count} convolutions where {expected} are "
                            "expected")


def existing_onnx(path: str | Path) -> Path:
    """``path`` as a Path; FileNotFoundError (one line) when it is missing or not a file. Every ONNX reader
    starts here."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found" if not path.exists() else f"{path}: not a file")
    return path


def read_onnx_metadata(path: str | Path) -> ModelMetadata:
    """Read :class:`ModelMetadata` from an ONNX file (without external weights) and check that the graph is the
    BANet it describes. Raises :class:`ArtifactError` (one line) for anything else. Needs no ``onnx`` package."""
    path = existing_onnx(path)
    stat = path.stat()
    metadata = _read_onnx_metadata(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return replace(metadata, extra=dict(metadata.extra))  # the cached one stays as read, whatever a caller does


@functools.lru_cache(maxsize=16)
def _read_onnx_metadata(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> ModelMetadata:
    """:func:`read_onnx_metadata` of one version of a file (the key: its name, inode, size and times). Choosing and
    opening a model reads its files' metadata several times (~5 ms each for a 2 MB INT8 file); a file rewritten
    is read again. Errors are not cached."""
    summary = summarize_onnx(Path(path).read_bytes(), path)
    metadata = ModelMetadata.from_props(summary.props, path)
    convs = summary.ops["Conv"] + summary.ops["ConvTranspose"]
    check_signature(summary.inputs, summary.outputs, convs, metadata, path)
    return metadata


def outdated_graph(metadata: ModelMetadata, onnx_path: str | Path) -> str | None:
    """Why a graph written by an older exporter computes something the current one does not (its
    :data:`GRAPH_REVISION`), or None."""
    if metadata.graph_revision >= GRAPH_REVISION:
        return None
    return (f"{onnx_path} was exported by an older banet-deploy (graph revision {metadata.graph_revision}, current "
            f"{GRAPH_REVISION}): its strip pooling computes a float32 index that OpenVINO's dynamic-shape "
            "compilation rounds differently, moving strips at some sizes")


def stale_source(metadata: ModelMetadata, onnx_path: str | Path, weights: str | Path | None) -> str | None:
    """Why an ONNX derived from ``weights`` no longer stands for them: it carries another checkpoint's sha256, or
    an older exporter wrote it (:func:`outdated_graph`).

    None when it matches, or when there is nothing to compare (no weights file, no recorded sha256) and the
    graph is current. Tools that find ``engines/<weights stem>*.onnx`` call this so a newer checkpoint under the
    same name is never measured, quantized or built through an ONNX of the old one, nor through an old graph.
    """
    outdated = outdated_graph(metadata, onnx_path)
    if outdated is not None:
        return outdated
    if weights is None or not metadata.source_sha256 or not Path(weights).is_file():
        return None
    current = file_sha256(weights)
    if metadata.source_sha256 == current:
        return None
    return (f"{onnx_path} was exported from other weights than {weights} (sha256 {metadata.source_sha256[:12]}... "
            f"vs {current[:12]}...)")
