"""A ready-made engine manifest for tests of the manifest module and the TensorRT backend (no TensorRT needed)."""

import hashlib

from banet.config import BANetConfig
from banet.conventions import BANET
from banet.manifest import EngineManifest
from banet.metadata import ModelMetadata


def make_manifest(engine_bytes=b"engine", **changes) -> EngineManifest:
    """A manifest for ``engine_bytes``: TensorRT 10.8 on an RTX 3090, built from tiny.onnx; ``changes`` override."""
    metadata = ModelMetadata(conventions=BANET, config=BANetConfig(num_bams=2, dim_1=8, dim_2=16), precision="fp32",
                             source_sha256="ab" * 32, source_name="tiny.safetensors", exporter="test", opset=17)
    fields = dict(
        engine="tiny_fp16.engine", engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        engine_bytes=len(engine_bytes), runtime="tensorrt", runtime_version="10.8.0.43", precision="fp16",
        profiles=[{"input": "input", "min": [1, 3, 64, 64], "opt": [1, 3, 256, 256], "max": [2, 3, 512, 512]}],
        onnx={"path": "tiny.onnx", "sha256": "cd" * 32, "bytes": 123, "precision": "fp32"},
        metadata=metadata.to_props(), build={"seconds": 1.0},
        gpu={"name": "NVIDIA GeForce RTX 3090", "compute_capability": [8, 6]},
        rebuild_command="python export/build_trt.py --fp16 --runtime tensorrt --force")
    fields.update(changes)
    return EngineManifest(**fields)
