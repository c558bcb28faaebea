"""A model-metadata value that does not parse is refused in one line naming the key and the file.

Before: the parser's own wording without the key, as a bare ValueError/TypeError (not ``ArtifactError``, so the
commands that turn an ``ArtifactError`` into one line showed a traceback), e.g. an engine manifest's
``metadata (invalid literal for int() with base 10: 'seventeen')``, or ``'int' object is not iterable`` for a
``banet.static_shape`` of ``5``. Now e.g. ``x.onnx: metadata banet.opset: not a whole number ('seventeen')``.
"""

from __future__ import annotations

import pytest

from banet.errors import ArtifactError
from banet.manifest import EngineManifest, ManifestError
from banet.metadata import ModelMetadata, read_onnx_metadata
from tests.manifest_helpers import make_manifest

GOOD = make_manifest().metadata

BAD = [
    ("banet.opset", "seventeen", "not a whole number ('seventeen')"),
    ("banet.min_size", "2.5", "not a whole number ('2.5')"),
    ("banet.max_size", "", "not a whole number ('')"),
    ("banet.size_multiple", "two", "not a whole number ('two')"),
    ("banet.offset", "half", "not a number ('half')"),
    ("banet.static_shape", "[1, 2", "not null or a list of 3 positive whole numbers"),
    ("banet.static_shape", "5", "not null or a list of 3 positive whole numbers"),
    ("banet.static_shape", '[1, "64", 64]', "not null or a list of 3 positive whole numbers"),
    ("banet.config", "{bad", "not a JSON object ('{bad')"),
    ("banet.config", "[4]", "not a JSON object ('[4]')"),
    ("banet.config", '{"num_bams": "4"}', "num_bams is not a whole number"),
    ("banet.config", '{"ba_fuse_full": 1}', "ba_fuse_full is not true or false"),
    ("banet.config", '{"layers": 4}', "unknown field 'layers'"),
    ("banet.config", '{"num_bams": 0}', "num_bams must be >= 1, got 0"),
]


@pytest.mark.parametrize("key, value, problem", BAD)
def test_a_value_that_does_not_parse_names_its_key_and_the_file(key, value, problem):
    with pytest.raises(ArtifactError) as info:
        ModelMetadata.from_props({**GOOD, key: value}, "engines/x.onnx")
    message = str(info.value)
    assert message.startswith(f"engines/x.onnx: metadata {key}: {problem}"), message
    assert "\n" not in message and "invalid literal" not in message and "Expecting" not in message


def test_a_long_or_multiline_value_stays_one_short_line():
    with pytest.raises(ArtifactError) as info:
        ModelMetadata.from_props({**GOOD, "banet.opset": "1\n" * 200}, "x.onnx")
    message = str(info.value)
    assert "\n" not in message and len(message) < 200, message


def test_the_good_values_still_parse():
    metadata = ModelMetadata.from_props(GOOD, "x.onnx")
    assert metadata.opset == 17 and metadata.config.num_bams == 2 and metadata.static_shape is None
    static = ModelMetadata.from_props({**GOOD, "banet.static_shape": "[1, 64, 96]", "banet.shape_mode": "static"},
                                      "x.onnx")
    assert static.static_shape == (1, 64, 96)


def test_an_engine_manifest_names_the_key():
    """Before: 'metadata (invalid literal for int() with base 10: 'seventeen')'."""
    data = make_manifest().to_dict()
    data["metadata"]["banet.opset"] = "seventeen"
    with pytest.raises(ManifestError) as info:
        EngineManifest.from_dict(data, "engines/x.json")
    assert "metadata banet.opset: not a whole number ('seventeen')" in str(info.value), info.value


def test_an_onnx_file_names_the_key_and_the_file(tmp_path):
    """The reader every command and the runtime use: an ArtifactError naming the file, not a bare ValueError."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    model = helper.make_model(graph)
    for key, value in {**GOOD, "banet.min_size": "two"}.items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / "x.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError) as info:
        read_onnx_metadata(path)
    assert str(info.value).startswith(f"{path}: metadata banet.min_size: not a whole number ('two')"), info.value


@pytest.mark.parametrize("key, value, expected", [
    ("precision", "fp64", "banet.precision: not one of fp32, fp16, int8"),
    ("shape_mode", "elastic", "banet.shape_mode: not \"dynamic\""),
    ("shape_mode", "static", "banet.shape_mode: not \"dynamic\""),  # static without a static_shape
    ("static_shape", "[1, 64, 96]", "banet.shape_mode: not \"dynamic\""),  # a shape, yet "dynamic"
])
def test_precision_and_shape_mode_must_be_known_values(key, value, expected):
    """A hand-edited precision or shape mode was read as it stood: "fp64" reached the runtime's precision logic."""
    props = {**GOOD, f"banet.{key}": value}
    with pytest.raises(ArtifactError) as exc:
        ModelMetadata.from_props(props, "x.onnx")
    assert str(exc.value).startswith("x.onnx: metadata ") and expected in str(exc.value)
    assert "\n" not in str(exc.value)
