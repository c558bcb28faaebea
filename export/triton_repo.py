"""Write a Triton Inference Server model repository for an exported BANet.

Models written (``max_batch_size`` > 0, so Triton's dynamic batcher groups same-shaped requests):

* the network, in one of three flavours (:data:`FLAVOURS`), each for the servers that can run it:
  ``python`` (``<name>_ort``: ONNX Runtime inside a Triton Python model, any server with the Python backend,
  including the one PyTriton bundles), ``onnxruntime`` (``<name>_onnx``: Triton's ``onnxruntime_onnx`` backend,
  NVIDIA's server containers) and ``tensorrt`` (``<name>_trt``: a TensorRT plan, NVIDIA's containers with the
  engine's TensorRT version on the engine's GPU model);
* ``<name>_pre`` / ``<name>_post`` (Python backend) and the ensemble ``<name>``: clients send a plain
  ``UINT8 [H, W, 3]`` BGR image and get one back; padding, normalisation, clamping and cropping happen in the
  Python models through ``banet.processing``, copied with the rest of the numpy-only core it needs into each
  model's version folder, so the repository is self-contained: the server's Python needs numpy (and
  onnxruntime for the ``python`` flavour), not banet-deploy;
* in the ``python`` flavour, images larger than a memory budget (``memory_budget_mb``, default the runtime's
  ``Deblurrer``'s 768 MiB) run through the network in overlapping tiles, blended by a copy of ``runtime/tiling.py``
  (the runtime's one implementation, numpy only) with the ``Deblurrer``'s tile plan;
* ``README_<name>.md``: what was written, for which server, how to start it and the memory a request takes;
* ``<model>/to_triton.json`` in each model folder (:mod:`banet.triton_marker`): the files written there, and
  for the ensemble its request limits (batch, pixels), which ``serving.triton_server``'s front enforces.

Nothing is written until the name, the numbers and every target path (inside the repository) are checked;
``force`` replaces only folders holding this tool's marker for this ensemble and nothing added since.

Input/output names, element types and dimensions are read from the ONNX graph, never restated.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

import banet
from banet.config import activation_bytes_per_pixel
from banet.conventions import METADATA_PREFIX
from banet.manifest import EngineManifest, ManifestError, read_manifest
from banet.metadata import ModelMetadata
from banet.outputs import check_input
from banet.triton_marker import (
    DEFAULT_MAX_PIXELS,
    MARKER,
    MAX_PIXELS_RANGE,
    TOOL,
    MarkerError,
    RequestLimits,
    marker_text,
    read_marker,
)
from export.onnx_file import check_banet_graph, load_onnx
from runtime.deblurrer import DEFAULT_MEMORY_BUDGET_MB
from runtime.images import MIN_SIDE

_ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                   onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.INT32: "TYPE_INT32",
                   onnx.TensorProto.INT64: "TYPE_INT64"}
PYTHON_MODELS = Path(__file__).resolve().parent / "triton_python"
BANET_PACKAGE = Path(banet.__file__).resolve().parent
#: Core modules the Python models import; what they import from ``banet`` is copied along (see :func:`core_files`).
VENDORED = ("conventions", "processing")
#: ... and what the ``python`` flavour's network model imports from it (its ONNX Runtime session options).
VENDORED_NETWORK = ("onnxruntime_options",)
#: ... and the runtime's tiling (numpy only), copied next to its model.py as ``tiling.py``.
TILING = Path(__file__).resolve().parent.parent / "runtime" / "tiling.py"
#: Overlap of the python flavour's tiles, in pixels: the ``Deblurrer``'s default ``tile_overlap`` (a test holds
#: them equal), so a tiled image is blended as the runtime blends it.
TILE_OVERLAP = 32
#: Bytes per image pixel the models and Triton hold besides the network's working memory, for the README: uint8
#: images in and out, the float32 network input and output in the pre, network and post models and in Triton's
#: shared memory between them, the tiles' blending sums. Measured with the default network, one 3464x3464 (12 MP)
#: image under the default budget: the four processes' peak resident memory above idle summed to 185 bytes a
#: pixel besides the budget (shared memory counted in each process that touched it).
HELD_BYTES_PER_PIXEL = 192


@dataclass(frozen=True)
class Flavour:
    """One way to run the network inside Triton."""

    suffix: str  # model name: <name>_<suffix>
    backend: str  # Triton platform ("onnxruntime_onnx", "tensorrt_plan") or backend ("python")
    server: str  # which Triton servers can load it (README and config comment)


FLAVOURS = {
    "python": Flavour("ort", "python", "any Triton server with the Python backend and numpy + onnxruntime in its "
                      "Python environment (the tritonserver that PyTriton bundles: python -m serving.triton_server)"),
    "onnxruntime": Flavour("onnx", "onnxruntime_onnx", "a Triton server with the onnxruntime backend "
                           "(NVIDIA's server containers, nvcr.io/nvidia/tritonserver:<yy.mm>-py3)"),
    "tensorrt": Flavour("trt", "tensorrt_plan", "a Triton server with the tensorrt backend of the engine's TensorRT "
                        "version, on the GPU model the engine was built on (NVIDIA's server containers)"),
}


class TritonRepoError(ValueError):
    """The model cannot be described to Triton (or the repository cannot be written)."""


#: Ensemble names: Triton model names that are also plain folder names (no separators, dots or spaces).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
INSTANCES_RANGE = (1, 64)
THREADS_RANGE = (0, 1024)
#: --memory-budget-mb: 0 (no budget: whole images) or 16 MiB to 1 TiB.
BUDGET_RANGE = (16, 2**20)


def check_name(name: object) -> str:
    """``name`` if it is a safe ensemble name, else :class:`TritonRepoError` (one line, the name shortened)."""
    if isinstance(name, str) and NAME.fullmatch(name):
        return name
    shown = repr(name if not isinstance(name, str) or len(name) <= 40 else name[:40] + "...")
    raise TritonRepoError(f"invalid model name {shown}: use 1 to 64 letters, digits, '_' or '-', starting with a "
                          "letter or digit (no path separators, dots or spaces)")


def check_options(max_batch: int, instances: int, threads: int, max_pixels: int,
                  memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> None:
    """Refuse, with one line naming the option, numbers outside what a working repository can hold."""
    low, high = MAX_PIXELS_RANGE
    if type(max_pixels) is not int or not low <= max_pixels <= high:
        raise TritonRepoError(f"max-megapixels must be at most {high / 1e6:g} (and at least {low} pixels), got "
                              f"{max_pixels / 1e6:g}")
    try:
        RequestLimits(max_batch, max_pixels, MIN_SIDE).check()
    except MarkerError as exc:
        raise TritonRepoError(str(exc)) from None
    for label, value, (low, high) in (("instances", instances, INSTANCES_RANGE), ("threads", threads, THREADS_RANGE)):
        if type(value) is not int or not low <= value <= high:
            raise TritonRepoError(f"{label} must be an integer from {low} to {high}, got {value!r}")
    low, high = BUDGET_RANGE
    if (not isinstance(memory_budget_mb, int | float) or isinstance(memory_budget_mb, bool)
            or not (memory_budget_mb == 0 or low <= memory_budget_mb <= high)):
        raise TritonRepoError(f"memory-budget-mb must be 0 (no budget: whole images) or from {low} to {high} MiB, "
                              f"got {memory_budget_mb!r}")


def _inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves (links followed) inside the repository ``root`` (resolved), else refuse."""
    resolved = path.resolve()
    if resolved == root or root in resolved.parents:
        return path
    raise TritonRepoError(f"refusing to write {path}: it resolves to {resolved}, outside the repository {root}")


def _present_files(folder: Path) -> set[str]:
    """Files (and links) under ``folder``, relative, without Python's byte-code caches (the server writes those)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.relative_to(folder).parts}


def _check_ours(folder: Path, ensemble: str) -> None:
    """Refuse unless ``folder`` is a model folder this tool wrote for ``ensemble``, holding nothing else."""
    marker = read_marker(folder)
    if marker is not None and marker.get("ensemble") != ensemble:
        raise TritonRepoError(f"{folder} is a model of ensemble '{marker.get('ensemble')}', which {TOOL} wrote; "
                              f"not replacing it for ensemble '{ensemble}': pick another --name")
    if marker is None:
        raise TritonRepoError(f"{folder} was not written by {TOOL} for ensemble '{ensemble}' (no {MARKER} of "
                              "ours in it); not replacing it: move it away or pick another --name")
    extra = sorted(_present_files(folder) - set(marker["files"]) - {MARKER})
    if extra:
        more = f" and {len(extra) - 1} more files" if len(extra) > 1 else ""
        raise TritonRepoError(f"{folder} holds {extra[0]}{more}, which {TOOL} did not write; not replacing it: "
                              "move those files away first")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch dimension

    def pbtxt(self) -> str:
        dims = ", ".join(map(str, self.dims))
        return f'  {{\n    name: "{self.name}"\n    data_type: {self.data_type}\n    dims: [ {dims} ]\n  }}'


def onnx_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec], int | None]:
    """Graph inputs/outputs as Triton tensor specs, and the static batch size (None if dynamic)."""
    initializers = {i.name for i in model.graph.initializer}
    batch = None

    def spec(value) -> TensorSpec:
        nonlocal batch
        tensor = value.type.tensor_type
        if tensor.elem_type not in _ONNX_TO_TRITON:
            raise TritonRepoError(f"tensor {value.name}: element type {tensor.elem_type} has no Triton equivalent")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if not dims:
            raise TritonRepoError(f"tensor {value.name} has no shape")
        batch = dims[0] if dims[0] > 0 else batch
        return TensorSpec(value.name, _ONNX_TO_TRITON[tensor.elem_type], tuple(dims[1:]))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs, batch


def _config(name: str, platform_or_backend: str, max_batch: int, inputs, outputs, kind: str | None,
            instances: int, batching: bool, extra: str = "", comment: str = "") -> str:
    """One config.pbtxt; ``kind`` None writes no instance group (ensembles have none)."""
    key = "backend" if platform_or_backend == "python" else "platform"
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f'name: "{name}"', f'{key}: "{platform_or_backend}"', f"max_batch_size: {max_batch}",
             "input [\n" + ",\n".join(t.pbtxt() for t in inputs) + "\n]",
             "output [\n" + ",\n".join(t.pbtxt() for t in outputs) + "\n]"]
    if kind is not None:
        lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    if batching:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def _parameters(**values: object) -> str:
    """A config.pbtxt ``parameters`` block (string values, as Triton's Python models read them)."""
    return "\n".join(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'
                     for key, value in values.items())


def core_files(names: tuple[str, ...] = VENDORED) -> dict[str, Path]:
    """``banet`` module files the Python models need: ``names`` and every ``banet`` module they import.

    Raises :class:`TritonRepoError` if one imports anything but the standard library, numpy and ``banet``
    modules (the repository must run on a server whose Python has numpy and nothing of this project).
    """
    found: dict[str, Path] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = BANET_PACKAGE / f"{name}.py"
        found[name] = path
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [f"{node.module}.{a.name}" if node.module == "banet" else node.module for a in node.names]
                       if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                top, _, rest = module.partition(".")
                if top == "banet" and rest and (BANET_PACKAGE / f"{rest.split('.')[0]}.py").is_file():
                    todo.append(rest.split(".")[0])
                elif top not in ("numpy", "__future__") and top not in sys.stdlib_module_names:
                    raise TritonRepoError(f"banet/{name}.py imports {module}; the Triton Python models may only "
                                          "need numpy and the numpy-only core")
    return found


def tiling_file(path: Path = TILING) -> Path:
    """The runtime's tiling module, copied next to the python flavour's model.py; :class:`TritonRepoError` if it
    imports anything but the standard library and numpy (the server's Python has nothing of this project)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                   [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for module in modules:
            top = module.partition(".")[0]
            if top not in ("numpy", "__future__") and top not in sys.stdlib_module_names:
                raise TritonRepoError(f"{path.name} imports {module}; the Triton Python models may only need numpy "
                                      "and the standard library")
    return path


def network_parameters(metadata: ModelMetadata, memory_budget_mb: float, threads: int,
                       fixed_batch: int | None) -> dict[str, int | str]:
    """The python flavour's network parameters (config.pbtxt): threads and the tile plan's numbers.

    ``budget_pixels`` is the ``Deblurrer``'s for the same budget (input pixels one forward pass may take); 0 (no
    tiling, whole images as before) without a budget or for a static-shape export, which takes its one shape only.
    """
    budget_pixels = 0
    if memory_budget_mb and metadata.static_shape is None:
        budget_pixels = max(1, int(memory_budget_mb * 2**20 // activation_bytes_per_pixel(metadata.config)))
    return {"intra_op_threads": threads, "memory_budget_mb": f"{memory_budget_mb:g}", "budget_pixels": budget_pixels,
            "tile_overlap": TILE_OVERLAP, "size_multiple": metadata.conventions.size_multiple,
            "min_size": metadata.min_size, "max_size": metadata.max_size, "fixed_batch": fixed_batch or 0}


def engine_manifest(engine: Path) -> EngineManifest:
    """The engine's manifest, refused with one line unless Triton's TensorRT backend can load the engine."""
    check_input(engine, error=TritonRepoError, what="engine file")  # missing, or a folder given for it
    try:
        manifest = read_manifest(engine)
    except ManifestError as exc:
        raise TritonRepoError(str(exc)) from None
    if manifest.runtime != "tensorrt":
        raise TritonRepoError(
            f"{engine} was built with {manifest.flavour_name}, which Triton's TensorRT backend (tensorrt_plan) "
            "cannot load; build a TensorRT engine (python export/build_trt.py --runtime tensorrt) or serve the "
            "ONNX model (--flavour python or onnxruntime)")
    return manifest


def check_engine_matches(manifest: EngineManifest, engine: Path, metadata: ModelMetadata, onnx_path: Path) -> None:
    """Refuse an engine that is not the network the ONNX describes: the repository's configs, conventions and
    README come from the ONNX, the plan file from the engine, so other weights or another shape mode (a static
    engine under a dynamic config, which Triton refuses to load) would be served under the ONNX's description."""
    built_from = manifest.onnx.get("path", "the ONNX it was built from")
    recorded = manifest.metadata.get(METADATA_PREFIX + "source_sha256")
    if recorded and recorded != metadata.source_sha256:
        raise TritonRepoError(f"{engine} was built from other weights than {onnx_path} (sha256 {str(recorded)[:12]}... "
                              f"vs {metadata.source_sha256[:12]}...); pass the ONNX it was built from "
                              f"(--onnx, its manifest names {built_from})")
    mode = manifest.metadata.get(METADATA_PREFIX + "shape_mode", metadata.shape_mode)
    static = manifest.metadata.get(METADATA_PREFIX + "static_shape", "null")
    if mode != metadata.shape_mode or (mode == "static" and static != json.dumps(metadata.static_shape)):
        raise TritonRepoError(f"{engine} was built from a {mode} export ({static}), {onnx_path} is "
                              f"{metadata.shape_mode}; pass the ONNX it was built from (--onnx, its manifest names "
                              f"{built_from})")


def engine_note(manifest: EngineManifest) -> str:
    """One line: what the engine was built with and on, i.e. what the server must match."""
    gpu = manifest.gpu or {}
    cc = gpu.get("compute_capability")
    where = (f"{gpu.get('name', 'an unknown GPU')}" + (f" (compute capability {cc[0]}.{cc[1]})" if cc else "")
             if gpu else "no GPU (ahead-of-time build)")
    return (f"engine built with {manifest.flavour_name} ({manifest.precision}) on {where}; the server's TensorRT "
            f"must be {manifest.runtime_version} and its GPU the same model")


def memory_lines(flavour: str, metadata: ModelMetadata, limits: RequestLimits, budget_pixels: int,
                 memory_budget_mb: float) -> list[str]:
    """README lines: the memory one request can take, for the largest image the ensemble accepts."""
    per_pixel = activation_bytes_per_pixel(metadata.config)
    largest = limits.max_pixels
    held = f"{HELD_BYTES_PER_PIXEL * largest / 1e9:.1f} GB"
    safety = ["- a model process killed for memory is not restarted by Triton (every request to it then fails); "
              "`python -m serving.triton_server` notices it and exits with one error line."] * (flavour == "python")
    if budget_pixels:
        return [f"- memory: the network runs an image (or a same-sized batch) over {budget_pixels:,} pixels in "
                f"overlapping tiles and chunks within its budget of {memory_budget_mb:g} MiB (`--memory-budget-mb`; "
                f"{per_pixel:,} bytes a pixel estimated), as the runtime's `Deblurrer` does. Besides that, the models "
                f"and Triton hold copies of each image as it passes (float32 input and output): up to about "
                f"{HELD_BYTES_PER_PIXEL} bytes a pixel, {held} for one image of the largest size accepted "
                f"({largest:,} pixels, `--max-megapixels`), times the images in flight.", *safety]
    if flavour != "python":
        why = f"in the `{FLAVOURS[flavour].backend}` backend, which cannot tile"
        remedy = ", or serve the python flavour"
    elif metadata.static_shape is None:
        why, remedy = "without a memory budget (`--memory-budget-mb 0`)", ", or set a budget (`--memory-budget-mb`)"
    else:
        why, remedy = "as sent (the network takes its one static shape)", ""
    whole = f"{(per_pixel + HELD_BYTES_PER_PIXEL) * largest / 1e9:.0f} GB"
    return [f"- memory: the network runs each image (and same-sized batch) whole, {why}: about "
            f"{per_pixel + HELD_BYTES_PER_PIXEL:,} bytes a pixel ({per_pixel:,} estimated for the network) with the "
            f"copies the models hold, {whole} for one image of the largest size accepted ({largest:,} pixels); "
            f"lower `--max-megapixels` to bound it{remedy}.", *safety]


def _readme(name: str, flavour: str, network: str, engine_line: str, batching: bool, memory: list[str],
            gpu: bool = False) -> str:
    spec = FLAVOURS[flavour]
    serve = ("python -m serving.triton_server REPOSITORY        # the tritonserver PyTriton bundles, on 127.0.0.1"
             if flavour == "python" else
             "docker run --rm -p 8000:8000 -p 8001:8001 -v $PWD/REPOSITORY:/models "
             # every repository whose network runs on the GPU (KIND_GPU): onnxruntime --gpu lacked it
             + ("--gpus all " if gpu else "")
             + "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\\n    tritonserver --model-repository /models")
    lines = [f"# Triton model repository: {name}", "",
             f"Written by `export/to_triton.py --flavour {flavour}`. Clients send `UINT8 [1, H, W, 3]` BGR images "
             f'as input "image" to the ensemble `{name}` and get `"deblurred"` (same shape) back.', "",
             f"- `{name}_pre` -> `{network}` -> `{name}_post`: pre/post-processing are Python models that import the "
             "copy of banet-deploy's numpy-only core in their version folder (`1/banet/`); the server's Python "
             "environment needs numpy" + (" and onnxruntime" if flavour == "python" else "") + ".",
             f"- `{network}` (`{spec.backend}`) needs {spec.server}.",
             f"- dynamic batching of `{network}`: {'on' if batching else 'off'}."]
    if engine_line:
        lines.append(f"- {engine_line}.")
    lines += memory
    lines += ["", "Serve it:", "", "    " + serve.replace("REPOSITORY", "<this folder>"), ""]
    return "\n".join(lines)


def _vendor_files(modules: dict[str, Path]) -> dict[str, Path | str]:
    """What :func:`core_files` found, as version-folder files: ``1/banet/<module>.py`` and a package init."""
    files: dict[str, Path | str] = {"1/banet/__init__.py": (
        '"""Copy of banet-deploy\'s numpy-only core, written by export/to_triton.py: '
        'the Python models import it from here."""\n')}
    files.update({f"1/banet/{module}.py": path for module, path in modules.items()})
    return files


def _refuse_replacing(repository: Path, root: Path, name: str, models: list[str], readme: Path, force: bool,
                      sources: list[Path]) -> list[str]:
    """The existing models of this ensemble (and its README) that may be replaced; refuse anything else.

    Without ``force`` nothing existing is replaced. With it, only folders this tool wrote for ``name`` (its
    marker, no file added since), a README its ensemble marker names, and never a folder holding an input; anything
    else is refused first, so that --force is suggested only where it would work.
    """
    for path in [repository / m for m in models] + [readme]:
        _inside(root, path)
    existing = [m for m in models if os.path.lexists(repository / m)]
    readme_exists = os.path.lexists(readme)
    for model in existing:  # first: --force would not replace another ensemble's models, so it is not suggested
        _check_ours(repository / model, name)
        folder = (repository / model).resolve()
        for source in sources:
            if folder in source.resolve().parents:
                raise TritonRepoError(f"{source} lies inside {repository / model}, which --force would replace; "
                                      "copy it elsewhere first")
    if readme_exists:
        marker = read_marker(repository / name)
        if (readme.is_symlink() or not readme.is_file() or marker is None or marker.get("ensemble") != name
                or marker.get("readme") != readme.name):
            raise TritonRepoError(f"{readme} was not written by {TOOL}; not replacing it: move it away first")
    if (existing or readme_exists) and not force:
        shown = existing + ([readme.name] if readme_exists else [])
        raise TritonRepoError(f"{repository} already has {shown}; pass --force to replace them")
    return existing


def write_repository(onnx_path: Path, repository: Path, name: str = "banet", max_batch: int = 8,
                     gpu: bool = False, instances: int = 1, engine: Path | None = None,
                     force: bool = False, flavour: str | None = None, dynamic_batching: bool = True,
                     threads: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS,
                     memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> list[Path]:
    """Write the repository; returns the config.pbtxt paths.

    Nothing is written before everything is checked: the name (:func:`check_name`), the numbers
    (:func:`check_options`), that every path lies inside ``repository``, and what would be replaced: existing
    models of this ensemble are refused unless ``force``, and even then only folders this tool wrote (its
    ``to_triton.json`` marker, nothing added since) are replaced.
    ``flavour`` (see :data:`FLAVOURS`) defaults to ``tensorrt`` when an ``engine`` is given, else ``python``.
    ``threads``: ONNX Runtime intra-op threads of the ``python`` flavour (0: its default).
    ``max_pixels``: the largest image (H*W) the pre-processing model, and the launcher's front, accept.
    ``memory_budget_mb``: working memory one forward pass of the ``python`` flavour's network may take; larger
    images run in overlapping tiles (the ``Deblurrer``'s plan and blending), batches in chunks. 0: no budget
    (whole images; an untiled 12 MP photo needs about 14 GB with the default network).
    """
    name = check_name(name)
    check_options(max_batch, instances, threads, max_pixels, memory_budget_mb)
    repository = Path(repository)
    if repository.exists() and not repository.is_dir():
        raise TritonRepoError(f"repository {repository} exists and is not a folder")
    flavour = flavour or ("tensorrt" if engine is not None else "python")
    if flavour not in FLAVOURS:
        raise TritonRepoError(f"unknown flavour {flavour!r} (expected one of {list(FLAVOURS)})")
    if (engine is not None) != (flavour == "tensorrt"):
        raise TritonRepoError("the tensorrt flavour needs --engine" if engine is None else
                              f"--engine is only used by the tensorrt flavour, not {flavour}")
    model = load_onnx(onnx_path)
    metadata = ModelMetadata.from_props({e.key: e.value for e in model.metadata_props}, str(onnx_path))
    check_banet_graph(model, metadata, str(onnx_path))
    inputs, outputs, static_batch = onnx_io(model)
    if static_batch is not None:
        max_batch = static_batch if static_batch > 1 else 1
    kind = "KIND_GPU" if gpu or flavour == "tensorrt" else "KIND_CPU"
    spec = FLAVOURS[flavour]
    network = f"{name}_{spec.suffix}"
    comment = f"flavour {flavour}: needs {spec.server}"
    engine_line = ""
    extra = ""
    if flavour == "tensorrt":
        manifest = engine_manifest(engine)
        check_engine_matches(manifest, engine, metadata, Path(onnx_path))
        max_batch = min(max_batch, int(manifest.profile.max[0]))
        engine_line = engine_note(manifest)
        comment += "\n" + engine_line
    parameters = network_parameters(metadata, memory_budget_mb if flavour == "python" else 0, threads,
                                    static_batch)
    if flavour == "python":
        extra = _parameters(**parameters)
    limits = RequestLimits(max_batch, max_pixels, MIN_SIDE)
    plan: dict[str, str] = {network: _config(network, spec.backend, max_batch, inputs, outputs, kind, instances,
                                             dynamic_batching, extra, comment)}
    image = [TensorSpec("image", "TYPE_UINT8", (-1, -1, 3))]
    size = TensorSpec("original_size", "TYPE_INT32", (2,))
    net_in, net_out = inputs[0], outputs[0]
    pre_out = [TensorSpec(net_in.name, net_in.data_type, net_in.dims), size]
    core = "Python backend; imports the copy of banet's numpy-only core in 1/banet/ (needs numpy only)"
    plan[f"{name}_pre"] = _config(f"{name}_pre", "python", max_batch, image, pre_out, "KIND_CPU", instances, False,
                                  _parameters(max_pixels=max_pixels, min_side=MIN_SIDE),
                                  comment=core + "\nrefuses images under min_side or over max_pixels (H*W) pixels")
    plan[f"{name}_post"] = _config(f"{name}_post", "python", max_batch, [net_out, size], [TensorSpec(
        "deblurred", "TYPE_UINT8", (-1, -1, 3))], "KIND_CPU", instances, False, comment=core)
    steps = f"""ensemble_scheduling {{
  step [
    {{
      model_name: "{name}_pre"
      model_version: -1
      input_map {{ key: "image" value: "image" }}
      output_map {{ key: "{net_in.name}" value: "network_input" }}
      output_map {{ key: "original_size" value: "original_size" }}
    }},
    {{
      model_name: "{network}"
      model_version: -1
      input_map {{ key: "{net_in.name}" value: "network_input" }}
      output_map {{ key: "{net_out.name}" value: "network_output" }}
    }},
    {{
      model_name: "{name}_post"
      model_version: -1
      input_map {{ key: "{net_out.name}" value: "network_output" }}
      input_map {{ key: "original_size" value: "original_size" }}
      output_map {{ key: "deblurred" value: "deblurred" }}
    }}
  ]
}}"""
    plan[name] = _config(name, "ensemble", max_batch, image, [TensorSpec("deblurred", "TYPE_UINT8", (-1, -1, 3))],
                         None, instances, False, steps, comment=f"UINT8 BGR image in, deblurred image out; network: "
                                                                f"{network} ({flavour} flavour)")
    # Every file of every model, before anything is written: contents (str) or the file to copy (Path).
    files: dict[str, dict[str, Path | str]] = {model_name: {"config.pbtxt": text} for model_name, text in plan.items()}
    files[network]["1/model.plan" if flavour == "tensorrt" else "1/model.onnx"] = Path(engine or onnx_path)
    if flavour == "python":
        files[network]["1/model.py"] = PYTHON_MODELS / "network_onnxruntime.py"
        files[network]["1/tiling.py"] = tiling_file()
        files[network].update(_vendor_files(core_files(VENDORED_NETWORK)))
    conventions = json.dumps(metadata.conventions.to_metadata())
    vendored = _vendor_files(core_files())
    for role in ("pre", "post"):
        files[f"{name}_{role}"].update({"1/model.py": PYTHON_MODELS / f"{role}.py", "1/conventions.json": conventions,
                                        **vendored})
    roles = {name: "ensemble", network: "network", f"{name}_pre": "pre", f"{name}_post": "post"}

    # Every flavour's network folder is ours: replacing a repository with another flavour removes the old one,
    # which a server without its backend would otherwise fail to load.
    ours = list(plan) + [f"{name}_{f.suffix}" for f in FLAVOURS.values() if f"{name}_{f.suffix}" not in plan]
    root = repository.resolve()
    readme = repository / f"README_{name}.md"
    sources = [Path(onnx_path)] + ([Path(engine)] if engine is not None else [])
    for model_name in _refuse_replacing(repository, root, name, ours, readme, force, sources):
        shutil.rmtree(repository / model_name)
    if os.path.lexists(readme):
        readme.unlink()
    written = []
    for model_name, contents in files.items():
        folder = _inside(root, repository / model_name)
        (folder / "1").mkdir(parents=True)
        extra_fields = ({"flavour": flavour, "readme": readme.name, "limits": asdict(limits)}
                        if model_name == name else {})
        (folder / MARKER).write_text(marker_text(model_name, name, roles[model_name], list(contents),
                                                 **extra_fields))
        for relative, content in contents.items():
            target = _inside(root, folder / relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy2(content, target)
            else:
                target.write_text(content)
        written.append(folder / "config.pbtxt")
    memory = memory_lines(flavour, metadata, limits, int(parameters["budget_pixels"]), memory_budget_mb)
    _inside(root, readme).write_text(_readme(name, flavour, network, engine_line, dynamic_batching, memory,
                                             gpu=kind == "KIND_GPU"))
    return written
