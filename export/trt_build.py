"""Build TensorRT / TensorRT for RTX engines from the exported ONNX: plan, validate, build, manifest, drift.

The library behind ``export/build_trt.py``, split by job under :mod:`export.trt` (``runtime_info``: which
TensorRT; ``onnx_info``: the ONNX, shapes and profile checks; ``plan``: options, plan, command lines;
``planner``: :func:`make_plan`; ``polygraphy_build``: the build through NVIDIA Polygraphy's loaders;
``builder``: the parser check, progress display and calibration data; ``engine_files``: build, drift (a
Polygraphy comparison), engine + manifest pair, ``--check``). This module names the public API in one place.

Everything that needs neither TensorRT nor a GPU (which ONNX, the
optimisation profile against the ONNX's dynamic dimensions and the network's size multiple, what each runtime
and target can do, the ``trtexec`` line) is decided by :func:`make_plan` and refused there with the reason,
before any build. :func:`build_serialized` is the only code that builds: it constructs Polygraphy's
``NetworkFromOnnxPath`` / ``CreateConfig`` (``CreateConfigRTX``) / ``EngineBytesFromNetwork`` loaders from the plan
(:func:`build_loaders`, inspectable without TensorRT) and runs them (:func:`run_build`); the equivalent
``polygraphy convert`` line is printed with the plan. Per runtime:

* TensorRT 10.x, weakly typed (default there): FP32 ONNX, ``BuilderFlag.FP16`` for FP16; INT8 from the Q/DQ
  ONNX with ``BuilderFlag.INT8`` (+FP16), or implicit calibration (Polygraphy's ``Calibrator`` on
  ``IInt8EntropyCalibrator2``, with a cache).
* TensorRT 11+ (no weak typing, no calibrators), TensorRT for RTX, or ``--strongly-typed`` on 10.x: a strongly
  typed network, precision from the ONNX itself (the FP16 export of ``to_onnx.py --fp16``, or the Q/DQ ONNX).
* TensorRT for RTX builds ahead of time without a GPU, for compute capability targets (``--target sm75``);
  timing caches are no-ops there (kernels are compiled just in time; the runtime keeps a runtime cache).

:func:`parse_onnx` runs NVIDIA's ONNX parser alone (no GPU, nothing built) with whichever TensorRT is
installed: ``calibration.quantize`` refuses a ``trt`` INT8 file it rejects, and a dry run checks the build's ONNX.
"""

from __future__ import annotations

from export.trt.builder import (  # noqa: F401
    ParseReport,
    parse_onnx,
    parser_check,
)
from export.trt.engine_files import (  # noqa: F401
    build,
    check_engine,
    ensure_runnable,
    summary,
)
from export.trt.onnx_info import (  # noqa: F401
    DEFAULT_MAX,
    DEFAULT_MIN,
    DEFAULT_OPT,
    OnnxInfo,
    parse_shape,
    parse_targets,
    read_onnx_info,
    shape_text,
    validate_profile,
)
from export.trt.plan import (  # noqa: F401
    MIN_PSNR_DB,
    BuildOptions,
    BuildPlan,
    default_engine,
    default_onnx,
    polygraphy_command,
    rebuild_command,
    trtexec_command,
)
from export.trt.planner import (  # noqa: F401
    make_plan,
)
from export.trt.polygraphy_build import (  # noqa: F401
    build_loaders,
    build_serialized,
    polygraphy_backend,
    run_build,
)
from export.trt.runtime_info import (  # noqa: F401
    PRECISIONS,
    BuildError,
    PlanError,
    RuntimeInfo,
    RuntimeMissingError,
    detect_runtime,
    installed_runtime,
)
