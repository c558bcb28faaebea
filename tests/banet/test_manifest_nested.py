"""``EngineManifest.from_dict`` checks the nested fields itself, so every reader (the runtime, ``--check``, the
Triton exporter) refuses a hand-edited manifest in one line naming the field and the file.

Before: only ``export/trt/engine_files.checked_manifest`` (``build_trt.py --check``) checked them; ``from_dict``
accepted a manifest whose profile lacked ``max`` or whose metadata lacked ``banet.config``, and the runtime then
failed with a KeyError or TypeError from deep inside (``limits_from_manifest``, ``model_metadata``...)."""

import copy
import json

import pytest

from banet.manifest import EngineManifest, ManifestError, manifest_path, read_manifest
from tests.manifest_helpers import make_manifest

GOOD = make_manifest().to_dict()


EDITS = [
    (lambda m: m["metadata"].update({"banet.source_name": 5}), "metadata (expected text values)"),
    (lambda m: m["metadata"].pop("banet.config"), "metadata (metadata lacks 'banet.config')"),
    (lambda m: m["metadata"].update({"banet.opset": "seventeen"}), "metadata ("),
    (lambda m: m["profiles"][0].pop("max"), "profiles[0] (expected an input name and min/opt/max shapes"),
    (lambda m: m["profiles"][0].update(min="1x3x64x64"), "profiles[0]"),
    (lambda m: m["profiles"][0].update(opt=[1, 3, 256, True]), "profiles[0]"),
    (lambda m: m["profiles"][0].update(max=[2, 3, 512]), "profiles[0]"),
    (lambda m: m["profiles"][0].update(input=None), "profiles[0]"),
    (lambda m: m["profiles"].append({"input": "input"}), "profiles[1]"),
    (lambda m: m.update(targets=[75]), "targets (expected names such as sm75)"),
    (lambda m: m.update(targets=["gpu"]), "targets (expected names such as sm75)"),
    (lambda m: m["gpu"].update(compute_capability="8.6"), "gpu (expected a text name and a compute_capability"),
    (lambda m: m["gpu"].update(compute_capability=[8]), "gpu ("),
    (lambda m: m["gpu"].update(name=3090), "gpu ("),
    (lambda m: m["onnx"].update(path=["tiny.onnx"]), "onnx (expected text path, precision and sha256)"),
    (lambda m: m["onnx"].update(sha256=None), "onnx ("),
    (lambda m: m["build"].update(strongly_typed="yes"), "build.strongly_typed (expected true or false)"),
    (lambda m: m["build"].update(seconds="1.0"), "build.seconds (expected a number)"),
    (lambda m: m.update(precision="int4"), "precision 'int4' (expected fp32, fp16, int8)"),
    (lambda m: m.update(runtime=["tensorrt"]), "runtime (list, expected str)"),
    (lambda m: m.update(hardware_compatibility="everything"), "hardware_compatibility 'everything'"),
    (lambda m: m.update(drift={"worst_psnr_db": "47.5", "passed": True}), "drift ("),
    (lambda m: m.update(drift={"worst_psnr_db": 47.5, "passed": "yes"}), "drift ("),
]


@pytest.mark.parametrize("edit, named", EDITS)
def test_from_dict_refuses_a_nested_field_in_one_line(edit, named):
    data = copy.deepcopy(GOOD)
    edit(data)
    with pytest.raises(ManifestError) as info:
        EngineManifest.from_dict(data, "engines/x.json")
    message = str(info.value)
    assert message.startswith("engines/x.json: malformed manifest: ") and named in message, message
    assert "\n" not in message and message.endswith("rebuild the engine with export/build_trt.py")


@pytest.mark.parametrize("edit, named", EDITS[:4])
def test_every_reader_gets_the_checks_naming_the_file(tmp_path, edit, named):
    """The runtime's reader and ``--check``'s (which reuses it) refuse the same manifest with the same line."""
    from export.trt.engine_files import checked_manifest

    engine = tmp_path / "x.engine"
    engine.write_bytes(b"engine")
    data = copy.deepcopy(GOOD)
    edit(data)
    manifest_path(engine).write_text(json.dumps(data))
    messages = []
    for reader in (read_manifest, checked_manifest):
        with pytest.raises(ManifestError) as info:
            reader(engine)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"{manifest_path(engine)}: malformed manifest: ") and named in messages[0]


def test_several_problems_are_named_together():
    data = copy.deepcopy(GOOD)
    data["targets"] = [75]
    data["build"]["strongly_typed"] = "yes"
    with pytest.raises(ManifestError, match=r"targets \(.*\); build\.strongly_typed \("):
        EngineManifest.from_dict(data, "x.json")


@pytest.mark.parametrize("changes", [
    {},
    {"gpu": None, "runtime": "tensorrt-rtx", "runtime_version": "1.7.1.116", "targets": ["sm75", "sm86"]},
    {"gpu": {"name": "NVIDIA GeForce RTX 3090"}},
    {"drift": {"skipped": "no GPU here"}},
    {"drift": {"worst_psnr_db": 47.5, "passed": True}, "hardware_compatibility": "ampere_plus"},
    {"build": {"seconds": 2, "strongly_typed": False, "options": {"any": "thing"}}},
])
def test_manifests_the_builder_writes_still_read(changes):
    manifest = EngineManifest.from_dict(make_manifest(**changes).to_dict(), "x.json")
    assert manifest.profile.max == (2, 3, 512, 512)
    assert manifest.model_metadata().precision == "fp16"
