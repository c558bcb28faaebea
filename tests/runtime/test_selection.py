"""precision="int8" and backend="auto": the right file for the backend, held to the budget, named; refusals in one
line."""

import importlib.util
import json
import shutil

import numpy as np
import pytest

from banet.artifacts import int8_onnx_path
from banet.defaults import DEFAULT_ONNX
from banet.errors import ArtifactError, OptionError
from runtime import Deblurrer, ModelNotFoundError
from runtime.selection import auto_backend, choose
from tests.shipped_int8 import ov_file_holds_here

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module")
def tiny_files(tiny_fp32_and_int8):
    return tiny_fp32_and_int8


def _with_record(source, target, deltas):
    """A copy of ``source`` whose held-out record says ``deltas`` (None: no record)."""
    import onnx

    proto = onnx.load(str(source))
    kept = [p for p in proto.metadata_props if p.key != "banet.int8_heldout"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    if deltas is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "banet.int8_heldout", json.dumps({"delta_psnr_db": deltas, "images": 26})
    onnx.save(proto, str(target))
    return target


def test_int8_runs_the_file_next_to_the_fp32_onnx(tiny_files, tmp_path):
    fp32, int8 = tiny_files
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(fp32, folder / fp32.name)
    _with_record(int8, folder / int8.name, {"onnxruntime": -0.1, "openvino": -0.12})
    image = (np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)
    with Deblurrer(folder / fp32.name, precision="int8", backend="onnxruntime", threads=1) as d, \
            Deblurrer(folder / int8.name, backend="onnxruntime", threads=1) as direct:
        assert d.model_path == folder / int8.name
        assert d.backend.metadata.precision == "int8"
        np.testing.assert_array_equal(d(image), direct(image))


@pytest.mark.parametrize("deltas, message", [
    ({"onnxruntime": -0.45}, "loses 0.45 dB on the held-out photos on onnxruntime, over the 0.3 dB INT8 budget"),
    (None, "no held-out quality record"),
    ({"openvino": -0.1}, "was not measured on onnxruntime"),
])
def test_int8_over_budget_or_unmeasured_is_refused(tiny_files, tmp_path, deltas, message):
    fp32, int8 = tiny_files
    shutil.copy(fp32, tmp_path / fp32.name)
    _with_record(int8, tmp_path / int8.name, deltas)
    with pytest.raises(ArtifactError, match=message) as info:
        Deblurrer(tmp_path / fp32.name, precision="int8", backend="onnxruntime")
    assert "\n" not in str(info.value)


def test_missing_int8_file_names_the_command_that_makes_it(tiny_files, tmp_path):
    fp32, _ = tiny_files
    shutil.copy(fp32, tmp_path / fp32.name)
    with pytest.raises(ModelNotFoundError, match="python -m calibration.quantize --onnx .*tiny.onnx --flavour ort"):
        Deblurrer(tmp_path / fp32.name, precision="int8", backend="onnxruntime")
    # OpenVINO's own flavour missing and no ort file to fall back to: the command names OpenVINO's flavour
    with pytest.raises(ModelNotFoundError, match="no INT8 file for tiny.onnx on openvino: .*tiny_int8_ov.onnx does "
                                                 "not exist; make it with .* --flavour ov"):
        choose(tmp_path / fp32.name, "openvino", "int8")


def test_openvino_runs_the_ov_file_and_falls_back_to_the_ort_one_with_a_warning(tiny_files, tmp_path, caplog):
    """A model quantized before the ``ov`` flavour existed still runs on OpenVINO (its ort file), and says so."""
    fp32, int8 = tiny_files
    shutil.copy(fp32, tmp_path / fp32.name)
    _with_record(int8, tmp_path / int8.name, {"onnxruntime": -0.1, "openvino": -0.12})
    with caplog.at_level("WARNING", logger="runtime.selection"):
        chosen, backend = choose(tmp_path / fp32.name, "openvino", "int8")
    assert (chosen.name, backend) == ("tiny_int8_ort.onnx", "openvino")
    assert "no ov INT8 file for tiny.onnx (tiny_int8_ov.onnx): running its ort file on openvino" in caplog.text
    assert "--flavour ov" in caplog.text
    _with_record(int8, tmp_path / "tiny_int8_ov.onnx", {"onnxruntime": -0.3, "openvino": -0.05})
    caplog.clear()
    with caplog.at_level("WARNING", logger="runtime.selection"):
        assert choose(tmp_path / fp32.name, "openvino", "int8")[0].name == "tiny_int8_ov.onnx"
        assert choose(tmp_path / fp32.name, "onnxruntime", "int8")[0].name == "tiny_int8_ort.onnx"
    assert "no ov INT8 file" not in caplog.text


@pytest.mark.parametrize("backend", ["torch", "tensorrt"])
def test_int8_on_other_backends_is_an_option_error(tiny_files, backend):
    with pytest.raises(OptionError, match="precision='int8' runs INT8 Q/DQ ONNX files on onnxruntime or openvino"):
        choose(tiny_files[0], backend, "int8")


def test_fp32_refuses_an_int8_file_and_bad_precisions(tiny_files):
    with pytest.raises(OptionError, match="is a int8 model"):
        choose(tiny_files[1], None, "fp32")
    with pytest.raises(OptionError, match="precision must be one of"):
        choose(tiny_files[0], None, "int4")


def test_auto_prefers_openvino_for_onnx_where_installed(tiny_files, tmp_path):
    assert auto_backend(tiny_files[0]) == ("openvino" if HAS_OPENVINO else "onnxruntime")
    assert auto_backend(tmp_path / "x.engine") == "tensorrt"
    assert auto_backend(tmp_path / "x.safetensors") == "torch"
    with Deblurrer(tiny_files[0], backend="auto", threads=1) as d:
        assert d.backend.name == auto_backend(tiny_files[0])


def _with_fields(source, target, fields):
    """A copy of ``source`` whose held-out record has ``fields`` added."""
    import onnx

    proto = onnx.load(str(source))
    entry = next(p for p in proto.metadata_props if p.key == "banet.int8_heldout")
    entry.value = json.dumps({**json.loads(entry.value), "cpu": "Some CPU", **fields})
    onnx.save(proto, str(target))
    return target


def _with_units(source, target, units):
    """A copy of ``source`` whose held-out record says it was measured on a CPU with ``units`` int8 units."""
    return _with_fields(source, target, {"int8_units": units})


def test_an_ov_file_measured_on_other_int8_units_gives_way_to_the_ort_file(tiny_files, tmp_path, caplog,
                                                                          monkeypatch):
    """OpenVINO's int8 kernels differ by CPU unit, and so can what a file loses (the trt file: 3.68 dB on an AMD
    EPYC, 0.17 on an Intel Xeon with AMX): an ov file measured on other units than this CPU's is not trusted."""
    import banet.machine

    fp32, int8 = tiny_files
    shutil.copy(fp32, tmp_path / fp32.name)
    _with_record(int8, tmp_path / int8.name, {"onnxruntime": -0.1, "openvino": -0.12})
    ov = _with_record(int8, tmp_path / "tiny_int8_ov.onnx", {"onnxruntime": -0.3, "openvino": -0.05})
    monkeypatch.setattr(banet.machine, "int8_units", lambda cpuinfo=None: "avx512_vnni")
    for units, runs in (("amx_int8", "tiny_int8_ort.onnx"), ("avx512_vnni", "tiny_int8_ov.onnx"),
                        (None, "tiny_int8_ov.onnx")):  # no field: a record from before it was written
        if units:
            _with_units(ov, ov, units)
        caplog.clear()
        with caplog.at_level("WARNING", logger="runtime.selection"):
            assert choose(tmp_path / fp32.name, "openvino", "int8")[0].name == runs, units
        if runs == "tiny_int8_ort.onnx":
            assert ("tiny_int8_ov.onnx was measured on a CPU with amx_int8 int8 units (Some CPU), this one has "
                    "avx512_vnni: its quality on this CPU is unmeasured, so its ort file runs on openvino"
                    ) in caplog.text
            assert "--flavour ov --force" in caplog.text
        else:
            assert not caplog.text
        _with_record(int8, ov, {"onnxruntime": -0.3, "openvino": -0.05})
    # ONNX Runtime runs its own flavour whatever the ov file says
    _with_units(ov, ov, "amx_int8")
    assert choose(tmp_path / fp32.name, "onnxruntime", "int8")[0].name == "tiny_int8_ort.onnx"


def test_an_ov_file_measured_per_unit_class_runs_where_it_holds(tiny_files, tmp_path, caplog, monkeypatch):
    """A record measured per int8 unit class (calibration.heldout.openvino_by_units; the shipped ov file: -0.03 dB
    with AMX, -2.13 dB with the kernels of CPUs without it) says where the ov file keeps its quality: there it runs;
    on a class measured over the budget the ort file runs, logged without a warning (nothing for the user to do);
    on a class not measured, the ort file with the warning. Named as the model, the file is held to its class's
    loss."""
    import banet.machine

    fp32, int8 = tiny_files
    shutil.copy(fp32, tmp_path / fp32.name)
    _with_record(int8, tmp_path / int8.name, {"onnxruntime": -0.1, "openvino": -0.12})
    ov = _with_record(int8, tmp_path / "tiny_int8_ov.onnx", {"onnxruntime": -0.3, "openvino": -0.05})
    _with_fields(ov, ov, {"int8_units": "amx_int8",
                          "openvino_by_units": {"amx_int8": -0.05, "avx512_vnni": -2.13, "none": -2.13}})
    for units, runs, said in (("amx_int8", "tiny_int8_ov.onnx", None),
                              ("avx512_vnni", "tiny_int8_ort.onnx", "INFO"),
                              ("none", "tiny_int8_ort.onnx", "INFO"),
                              ("avx_vnni", "tiny_int8_ort.onnx", "WARNING")):
        monkeypatch.setattr(banet.machine, "int8_units", lambda cpuinfo=None, environ=None, units=units: units)
        caplog.clear()
        with caplog.at_level("INFO", logger="runtime.selection"):
            assert choose(tmp_path / fp32.name, "openvino", "int8")[0].name == runs, units
        levels = {r.levelname for r in caplog.records  # what is said of the ov file, not which file runs
                  if "tiny_int8_ov.onnx" in r.getMessage() and not r.getMessage().startswith("precision int8")}
        assert levels == ({said} if said else set()), (units, caplog.text)
        if said == "INFO":
            where = "on this CPU (no int8 dot-product units)" if units == "none" else \
                f"with this CPU's {units} int8 units"
            assert (f"tiny_int8_ov.onnx loses 2.13 dB on the held-out photos on openvino {where}, over the 0.3 dB "
                    "INT8 budget, so its ort file runs on openvino") in caplog.text
        if said == "WARNING":
            assert ("tiny_int8_ov.onnx was measured for CPUs with amx_int8, avx512_vnni, none int8 units (Some CPU), "
                    "this one has avx_vnni") in caplog.text
    monkeypatch.setattr(banet.machine, "int8_units", lambda cpuinfo=None, environ=None: "avx512_vnni")
    with pytest.raises(ArtifactError, match="loses 2.13 dB on the held-out photos on openvino with this CPU's "
                                            "avx512_vnni int8 units"):
        choose(ov, "openvino", None)
    assert choose(ov, "onnxruntime", None) == (ov, "onnxruntime")  # ONNX Runtime: its own entry, -0.3 dB


@pytest.mark.parametrize("backend, flavour", [
    ("onnxruntime", "ort"),
    pytest.param("openvino", "ov", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")),
])
def test_default_model_int8_is_shipped_and_within_budget(backend, flavour):
    if flavour == "ov" and not ov_file_holds_here():
        flavour = "ort"  # the ov file was measured over the budget with this CPU's int8 units, or not for them
    with Deblurrer(precision="int8", backend=backend, threads=1) as d:
        assert d.model_path.name == f"banet_default_int8_{flavour}.onnx"
        assert d.backend.metadata.precision == "int8"
        out = d((np.random.default_rng(1).random((24, 40, 3)) * 255).astype(np.uint8))
    assert out.shape == (24, 40, 3)


@pytest.mark.parametrize("flavour", ["ort", "ov"])
def test_shipped_int8_stands_for_the_shipped_weights_and_was_measured_on_all_heldout_images(flavour):
    """scripts/refresh_default.sh makes them again whenever the weights change; this fails until it does."""
    from banet.defaults import DEFAULT_WEIGHTS
    from banet.hashing import file_sha256
    from banet.metadata import read_onnx_metadata
    from banet.precision import INT8_HELDOUT_BUDGET_DB, heldout_record

    shipped = int8_onnx_path(DEFAULT_ONNX, flavour)
    assert read_onnx_metadata(shipped).extra["int8_flavour"] == flavour
    metadata = read_onnx_metadata(shipped)
    assert metadata.source_sha256 == file_sha256(DEFAULT_WEIGHTS)
    record = heldout_record(metadata)
    assert record["images"] == 26
    assert {"onnxruntime", "openvino"} <= set(record["delta_psnr_db"]) <= {"onnxruntime", "openvino", "openvino-bf16"}
    assert all(-INT8_HELDOUT_BUDGET_DB <= d <= 0.05 for d in record["delta_psnr_db"].values())


def test_cli_precision_int8_deblurs_with_the_shipped_file(tmp_path):
    from PIL import Image

    from runtime.cli import main

    Image.fromarray((np.random.default_rng(2).random((30, 44, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--precision", "int8", "--backend",
                 "onnxruntime", "--threads", "1", "-q"]) == 0
    assert (tmp_path / "out" / "a.png").is_file()
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "a.png"), "--precision", "int4"])
    assert info.value.code == 2


@pytest.mark.parametrize("options, expected", [
    ({}, "auto"), ({"threads": 1}, "auto"), ({"device": "cuda"}, "torch"), ({"device": "cuda:1"}, "torch"),
    ({"half": True}, "torch"), ({"channels_last": True}, "torch"),
])
def test_default_model_goes_to_pytorch_only_when_a_pytorch_option_asks(options, expected):
    from banet.defaults import DEFAULT_WEIGHTS

    model, backend = choose(None, None, None, options)
    if expected == "torch":
        assert (model, backend) == (DEFAULT_WEIGHTS, "torch")
    else:
        assert (model, backend) == (DEFAULT_ONNX, auto_backend(None))


def test_an_int8_file_named_as_the_model_is_held_to_its_record_too(tiny_files, tmp_path, caplog):
    """Before: only precision="int8" read the record; the TensorRT-flavour file named directly ran on OpenVINO
    (backend="auto") although it recorded losing 4.1 dB there (0.17 on ONNX Runtime)."""
    _, int8 = tiny_files
    over_on_openvino = _with_record(int8, tmp_path / "trt_flavour.onnx", {"onnxruntime": -0.17, "openvino": -4.1})
    with pytest.raises(ArtifactError) as info:
        choose(over_on_openvino, "openvino", None)
    message = str(info.value)
    assert message.startswith("trt_flavour.onnx loses 4.10 dB on the held-out photos on openvino, over the 0.3 dB")
    assert "it fits on onnxruntime" in message and "\n" not in message
    assert choose(over_on_openvino, "onnxruntime", None) == (over_on_openvino, "onnxruntime")
    assert choose(over_on_openvino, None, None) == (over_on_openvino, None)  # an .onnx: ONNX Runtime
    assert choose(over_on_openvino, "auto", None) == (over_on_openvino, "onnxruntime")
    over_everywhere = _with_record(int8, tmp_path / "poor.onnx", {"onnxruntime": -0.5, "openvino": -0.6})
    with pytest.raises(ArtifactError, match="loses 0.50 dB .* on onnxruntime.*fits on no backend installed"):
        choose(over_everywhere, "onnxruntime", None)
    unmeasured = _with_record(int8, tmp_path / "unmeasured.onnx", None)
    with caplog.at_level("WARNING", logger="runtime.selection"):
        assert choose(unmeasured, "onnxruntime", None) == (unmeasured, "onnxruntime")
    assert "unmeasured.onnx has no held-out quality record" in caplog.text


@pytest.mark.skipif(not HAS_OPENVINO, reason="the OpenVINO backend needs pip install '.[openvino]'")
def test_auto_runs_an_int8_file_on_openvino_where_it_fits(tiny_files, tmp_path):
    _, int8 = tiny_files
    fits = _with_record(int8, tmp_path / "fits.onnx", {"onnxruntime": -0.2, "openvino": -0.1})
    assert choose(fits, "auto", None) == (fits, "openvino")
    assert choose(fits, "openvino", None) == (fits, "openvino")


def _with_source(source, target, sha256):
    """A copy of ``source`` that says it was made from the checkpoint of ``sha256``."""
    import onnx

    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key == "banet.source_sha256":
            prop.value = sha256
    onnx.save(proto, str(target))
    return target


def test_an_int8_file_of_other_weights_is_refused_not_run(tiny_files, tmp_path, monkeypatch):
    """A retrained model re-exported under its old name: the old INT8 file beside it would deblur with the old
    weights. Refused, naming both files and the command that re-makes it; the same file of the same weights runs."""
    from banet.checkpoint import save_checkpoint
    from banet.metadata import read_onnx_metadata

    fp32, int8 = tiny_files
    shutil.copy(fp32, tmp_path / fp32.name)
    _with_source(_with_record(int8, tmp_path / int8.name, {"onnxruntime": -0.1}), tmp_path / int8.name, "ab" * 32)
    with pytest.raises(ArtifactError, match=r"tiny_int8_ort.onnx was quantized from other weights than tiny.onnx "
                                            r"\(sha256 abababababab\.\.\. vs .*calibration.quantize --onnx "
                                            r".*tiny.onnx --flavour ort --force") as info:
        Deblurrer(tmp_path / fp32.name, precision="int8", backend="onnxruntime")
    assert "\n" not in str(info.value)

    # a checkpoint: its INT8 file in the engines folder is held to the checkpoint's own sha256
    engines = tmp_path / "engines"
    engines.mkdir()
    monkeypatch.setenv("BANET_ENGINES", str(engines))
    import torch

    from banet.model import BANet
    from tests.conftest import TINY

    torch.manual_seed(1)
    weights = save_checkpoint(BANet(TINY).eval(), tmp_path / "tiny.safetensors")
    _with_record(int8, engines / int8.name, {"onnxruntime": -0.1})
    assert read_onnx_metadata(engines / int8.name).source_sha256  # the fixture's weights, not these
    with pytest.raises(ArtifactError, match="exported from other weights than .*tiny.safetensors"):
        Deblurrer(weights, precision="int8", backend="onnxruntime")
    _with_source(engines / int8.name, engines / int8.name, __import__("banet.hashing").hashing.file_sha256(weights))
    with Deblurrer(weights, precision="int8", backend="onnxruntime", threads=1) as d:
        assert d.model_path == engines / int8.name


def test_a_checkpoint_finds_the_int8_files_beside_it(tmp_path, monkeypatch):
    """Round 17: ``--model banet/weights/banet_default.safetensors --precision int8`` looked only in the engines
    folder, and its hint named an --onnx that was not there, while the shipped INT8 files sat beside it."""
    from banet.defaults import DEFAULT_WEIGHTS
    from runtime.selection import int8_file

    monkeypatch.setenv("BANET_ENGINES", str(tmp_path / "engines"))
    assert int8_file(DEFAULT_WEIGHTS, "onnxruntime") == int8_onnx_path(DEFAULT_ONNX, "ort")
    copy = shutil.copy(DEFAULT_WEIGHTS, tmp_path / "mine.safetensors")
    with pytest.raises(ModelNotFoundError, match=r"make it with python -m calibration\.quantize --weights "
                                                 rf"{tmp_path / 'mine.safetensors'} --flavour ort"):
        int8_file(copy, "onnxruntime")
