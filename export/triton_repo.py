"""Write a Triton Inference Server model repository for an exported BANet.

Models written (``max_batch_size`` > 0, so Triton's dynamic batcher groups same-shaped requests):

* ``<name>_onnx``: the ONNX model on ONNX Runtime (``onnxruntime_onnx``), dynamic height/width;
* ``<name>_trt``: the TensorRT plan (``tensorrt_plan``) when an engine and its manifest are given;
* ``<name>_pre`` / ``<name>_post`` (Python backend) and the ensemble ``<name>``: clients send a plain
  ``UINT8 [H, W, 3]`` BGR image and get one back; padding, normalisation, clamping and cropping happen in the
  Python models through ``banet.processing`` (so the Triton Python environment needs banet-deploy installed).

Input/output names, element types and dimensions are read from the ONNX graph, never restated.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from banet.manifest import ManifestError, read_manifest
from banet.metadata import ModelMetadata
from export.onnx_file import check_banet_graph, load_onnx

_ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                   onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.INT32: "TYPE_INT32",
                   onnx.TensorProto.INT64: "TYPE_INT64"}
PYTHON_MODELS = Path(__file__).resolve().parent / "triton_python"


class TritonRepoError(ValueError):
    """The model cannot be described to Triton (or the repository cannot be written)."""


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
            instances: int, batching: bool, extra: str = "") -> str:
    """One config.pbtxt; ``kind`` None writes no instance group (ensembles have none)."""
    key = "backend" if platform_or_backend == "python" else "platform"
    lines = [f'name: "{name}"', f'{key}: "{platform_or_backend}"', f"max_batch_size: {max_batch}",
             "input [\n" + ",\n".join(t.pbtxt() for t in inputs) + "\n]",
             "output [\n" + ",\n".join(t.pbtxt() for t in outputs) + "\n]"]
    if kind is not None:
        lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    if batching:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def write_repository(onnx_path: Path, repository: Path, name: str = "banet", max_batch: int = 8,
                     gpu: bool = False, instances: int = 1, engine: Path | None = None,
                     force: bool = False) -> list[Path]:
    """Write the repository; returns the config.pbtxt paths. Refuses to replace existing models unless ``force``."""
    model = load_onnx(onnx_path)
    metadata = ModelMetadata.from_props({e.key: e.value for e in model.metadata_props}, str(onnx_path))
    check_banet_graph(model, metadata, str(onnx_path))
    inputs, outputs, static_batch = onnx_io(model)
    if static_batch is not None:
        max_batch = static_batch if static_batch > 1 else 1
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    plan: dict[str, str] = {}
    plan[f"{name}_onnx"] = _config(f"{name}_onnx", "onnxruntime_onnx", max_batch, inputs, outputs, kind, instances,
                                   True)
    if engine is not None:
        if not engine.is_file():
            raise TritonRepoError(f"engine {engine} not found")
        try:
            profile_max = read_manifest(engine).profile.max[0]
        except ManifestError as exc:
            raise TritonRepoError(str(exc)) from None
        plan[f"{name}_trt"] = _config(f"{name}_trt", "tensorrt_plan", int(profile_max), inputs, outputs, "KIND_GPU",
                                      instances, True)
    image = [TensorSpec("image", "TYPE_UINT8", (-1, -1, 3))]
    size = TensorSpec("original_size", "TYPE_INT32", (2,))
    net_in, net_out = inputs[0], outputs[0]
    pre_out = [TensorSpec(net_in.name, net_in.data_type, net_in.dims), size]
    plan[f"{name}_pre"] = _config(f"{name}_pre", "python", max_batch, image, pre_out, "KIND_CPU", instances, False)
    plan[f"{name}_post"] = _config(f"{name}_post", "python", max_batch, [net_out, size], [TensorSpec(
        "deblurred", "TYPE_UINT8", (-1, -1, 3))], "KIND_CPU", instances, False)
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
      model_name: "{name}_onnx"
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
                         None, instances, False, steps)

    existing = [m for m in plan if (repository / m).exists()]
    if existing and not force:
        raise TritonRepoError(f"{repository} already has models {existing}; pass --force to replace them")
    written = []
    for model_name, text in plan.items():
        folder = repository / model_name
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(text)
        written.append(folder / "config.pbtxt")
    shutil.copy2(onnx_path, repository / f"{name}_onnx" / "1" / "model.onnx")
    if engine is not None:
        shutil.copy2(engine, repository / f"{name}_trt" / "1" / "model.plan")
    conventions = json.dumps(metadata.conventions.to_metadata())
    for role in ("pre", "post"):
        source = (PYTHON_MODELS / f"{role}.py").read_text()
        (repository / f"{name}_{role}" / "1" / "model.py").write_text(source)
        (repository / f"{name}_{role}" / "1" / "conventions.json").write_text(conventions)
    return written
