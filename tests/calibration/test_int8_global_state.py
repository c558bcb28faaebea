"""Quantization touches two pieces of process-wide state (ONNX Runtime's calibrator session factory, the root
logger's filters); each is confined to a context manager and restored on the way out, even on an error."""

from __future__ import annotations

import logging

import pytest
from onnxruntime.quantization import calibrate

from calibration.int8 import _calibration_threads, _quiet_onnxruntime_quantization


def test_calibrator_session_factory_is_restored_even_on_error():
    original = calibrate.CalibraterBase.create_inference_session
    with pytest.raises(RuntimeError, match="boom"), _calibration_threads(1):
        assert calibrate.CalibraterBase.create_inference_session is not original
        raise RuntimeError("boom")
    assert calibrate.CalibraterBase.create_inference_session is original


def test_quantization_warnings_are_filtered_only_inside_and_only_onnxruntimes(caplog):
    root = logging.getLogger()
    filters, level = list(root.filters), root.level

    def ort_warning(message: str) -> logging.LogRecord:
        return logging.LogRecord("root", logging.WARNING, "/x/site-packages/onnxruntime/quantization/quant_utils.py",
                                 1, message, None, None)

    with pytest.raises(RuntimeError), _quiet_onnxruntime_quantization():
        assert not root.filter(ort_warning("Please consider to run pre-processing"))
        with caplog.at_level(logging.WARNING):
            logging.warning("ours still shows")
        assert "ours still shows" in caplog.text
        raise RuntimeError
    assert root.filters == filters and root.level == level
    assert root.filter(ort_warning("shown again"))
