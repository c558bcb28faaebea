"""The INT8 budget: a file's recorded held-out cost is read back and held to 0.3 dB per backend."""

import dataclasses
import json

import pytest

from banet.config import BANetConfig
from banet.conventions import BANET
from banet.metadata import ModelMetadata
from banet.precision import HELDOUT_KEY, INT8_HELDOUT_BUDGET_DB, heldout_record, int8_refusal


def _metadata(record) -> ModelMetadata:
    base = ModelMetadata(config=BANetConfig(num_bams=1, dim_1=4, dim_2=8), conventions=BANET, precision="int8",
                         source_sha256="0" * 64, source_name="w", exporter="t", opset=17, input_name="input",
                         output_name="output", shape_mode="dynamic", static_shape=None, min_size=8, max_size=64)
    extra = {} if record is None else {HELDOUT_KEY: record if isinstance(record, str) else json.dumps(record)}
    return dataclasses.replace(base, extra=extra)


@pytest.mark.parametrize("record, backend, refused", [
    ({"delta_psnr_db": {"onnxruntime": -0.16, "openvino": -0.31}}, "onnxruntime", None),
    ({"delta_psnr_db": {"onnxruntime": -INT8_HELDOUT_BUDGET_DB}}, "onnxruntime", None),  # at the budget: allowed
    ({"delta_psnr_db": {"onnxruntime": -0.16, "openvino": -0.31}}, "openvino", "over the 0.3 dB INT8 budget"),
    ({"delta_psnr_db": {"onnxruntime": 0.05}}, "openvino", "not measured on openvino"),
    (None, "onnxruntime", "no held-out quality record"),
    ("{not json", "onnxruntime", "no held-out quality record"),
    ({"delta_psnr_db": "x"}, "onnxruntime", "no held-out quality record"),
])
def test_int8_refusal(record, backend, refused):
    reason = int8_refusal(_metadata(record), backend, "x.onnx")
    if refused is None:
        assert reason is None
    else:
        assert refused in reason and "x.onnx" in reason and "\n" not in reason


def test_heldout_record_round_trips():
    record = {"delta_psnr_db": {"onnxruntime": -0.1}, "images": 26}
    assert heldout_record(_metadata(record)) == record
