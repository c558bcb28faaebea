"""TensorRT / TensorRT for RTX engine builds, split by job (see ``export/trt_build.py`` for the overview)."""
