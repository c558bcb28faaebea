"""The MatMul strip pooling equals PyTorch's AdaptiveAvgPool2d + nearest interpolate on many sizes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from banet.pooling import (
    nearest_resize_matrix,
    resize_height_nearest,
    resize_width_nearest,
    strip_pool_height,
    strip_pool_width,
)

# Shorter than the bins (1..6), odd, primes, non-multiples of 3/5/7, multiples, and the 720p/1080p feature
# lengths (360, 640, 540, 960) plus lengths where float32 nearest rounding differs from exact floor (123, 141).
LENGTHS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 16, 17, 19, 23, 29, 31, 35, 36, 49, 64, 97, 105, 123, 141,
           183, 249, 360, 491, 540, 640, 960]
BINS = [1, 3, 5, 7]


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("length", LENGTHS)
def test_pool_matches_adaptive_avg_pool(length: int, bins: int) -> None:
    gen = torch.Generator().manual_seed(length * 10 + bins)
    x = torch.randn(2, 3, 5, length, generator=gen)
    torch.testing.assert_close(strip_pool_width(x, bins), F.adaptive_avg_pool2d(x, (5, bins)), atol=1e-6, rtol=0)
    xt = x.transpose(2, 3).contiguous()
    torch.testing.assert_close(strip_pool_height(xt, bins), F.adaptive_avg_pool2d(xt, (bins, 5)), atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("length", LENGTHS)
def test_resize_matches_nearest_interpolate(length: int, bins: int) -> None:
    gen = torch.Generator().manual_seed(length * 10 + bins + 1)
    y = torch.randn(2, 3, 4, bins, generator=gen)
    torch.testing.assert_close(resize_width_nearest(y, length, bins), F.interpolate(y, (4, length)), atol=1e-6, rtol=0)
    yt = y.transpose(2, 3).contiguous()
    torch.testing.assert_close(resize_height_nearest(yt, length, bins), F.interpolate(yt, (length, 4)), atol=1e-6,
                               rtol=0)


def test_resize_matches_on_every_length_up_to_1100() -> None:
    """Exhaustive: every output length a 2160-pixel input can produce, for each bin count."""
    for bins in BINS:
        y = torch.arange(bins, dtype=torch.float32).reshape(1, 1, 1, bins)
        for length in range(1, 1100):
            expected = F.interpolate(y, (1, length))
            assert torch.equal(resize_width_nearest(y, length, bins), expected), (bins, length)


def test_pool_is_exact_in_float64_on_every_length_up_to_600() -> None:
    for bins in (3, 5, 7):
        for length in range(1, 600):
            x = torch.randn(1, 1, 1, length, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
            err = (strip_pool_width(x, bins) - F.adaptive_avg_pool2d(x, (1, bins))).abs().max().item()
            assert err <= 1e-12, (bins, length, err)


def test_half_precision_keeps_dtype() -> None:
    x = torch.randn(1, 2, 9, 13).half()
    assert strip_pool_width(x, 5).dtype == torch.float16
    assert resize_height_nearest(strip_pool_height(x, 7), 9, 7).dtype == torch.float16


def _float32_rounding_lengths(bins: int, limit: int) -> list[int]:
    """Lengths up to ``limit`` where PyTorch's float32 ``floor(j * (bins / L))`` is one below the exact quotient
    at some ``j = k * L / bins`` (numpy float32, vectorised over every length ``bins`` divides)."""
    lengths = np.arange(bins, limit + 1, bins, dtype=np.int64)
    scale = np.float32(bins) / lengths.astype(np.float32)
    found = np.zeros(len(lengths), dtype=bool)
    for k in range(1, bins):
        product = (k * (lengths // bins)).astype(np.float32) * scale  # float32 times float32, as in the kernel
        found |= np.floor(product) < k
    return lengths[found].tolist()


@pytest.mark.parametrize("bins", [3, 5, 7])
def test_resize_matches_where_float32_rounding_moves_the_source(bins: int) -> None:
    """Beyond the exhaustive range: at lengths up to 2**15 where float32 picks the lower source (the case the
    integer arithmetic emulates), and at their neighbours, the resize equals F.interpolate."""
    rounding = _float32_rounding_lengths(bins, 2**15)
    assert len(rounding) > 300  # about one length in seven that bins divides
    picked = np.random.default_rng(bins).choice(rounding, 40, replace=False)
    y = torch.arange(bins, dtype=torch.float32).reshape(1, 1, 1, bins)
    for length in sorted({int(v) + d for v in picked for d in (0, bins, 1)}):
        expected = F.interpolate(y, (1, length))
        assert torch.equal(resize_width_nearest(y, length, bins), expected), (bins, length)


@pytest.mark.parametrize("dynamic", [True, False])
def test_matrices_made_while_tracing_do_not_outlive_the_trace(dynamic: bool) -> None:
    """torch.export (what the dynamo ONNX exporter runs) traces with fake tensors; an eager call after it, in the
    same process (the exporter's own parity check), must get real matrices, not the trace's. With a static size
    the length is a plain int there, as in eager runs, whose matrices are kept."""

    class Resize(torch.nn.Module):
        def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return resize_width_nearest(strip_pool_width(y, 3), x.shape[3], 3)

    y, x = torch.randn(1, 1, 1, 125), torch.zeros(1, 1, 1, 126)
    shapes = ({}, {3: torch.export.Dim("width", min=4, max=4096)}) if dynamic else None
    torch.export.export(Resize(), (y, x), dynamic_shapes=shapes, strict=False)
    expected = F.interpolate(F.adaptive_avg_pool2d(y, (1, 3)), (1, 126))
    torch.testing.assert_close(Resize()(y, x), expected, atol=1e-6, rtol=0)


def test_eager_matrices_are_kept_and_read_only_shared() -> None:
    first = nearest_resize_matrix(246, 3, torch.float32, torch.device("cpu"))
    assert nearest_resize_matrix(246, 3, torch.float32, torch.device("cpu")) is first  # built once per size
    assert nearest_resize_matrix(246, 3, torch.float64, torch.device("cpu")) is not first


@pytest.mark.parametrize("bins", [3, 7])
def test_exported_resize_index_is_exact_on_openvino_int32_arithmetic(tmp_path, bins: int) -> None:
    """The exported index arithmetic run by OpenVINO compiled for dynamic shapes: it rewrites float division as a
    reciprocal (the float32 graph picked other strips) and computes int64 graph arithmetic in int32 (a first
    integer version overflowed from length 170 on). Every length up to 1,200 and rounding lengths up to 2**15."""
    ov = pytest.importorskip("openvino", reason="needs pip install '.[openvino]'")

    class Matrix(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nearest_resize_matrix(x.shape[3], bins, torch.float32, x.device)

    path = tmp_path / "resize.onnx"
    torch.onnx.export(Matrix(), (torch.zeros(1, 1, 1, 123),), str(path), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {3: "length"}}, opset_version=17)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rounding = _float32_rounding_lengths(bins, 2**15)
    picked = np.random.default_rng(bins).choice(rounding, 30, replace=False).tolist()
    for length in list(range(1, 1201)) + picked + [2**15]:
        got = compiled({0: np.zeros((1, 1, 1, length), np.float32)})[0]
        expected = F.interpolate(torch.eye(bins).reshape(1, bins, 1, bins), (1, length))[0, :, 0].T.numpy()
        assert np.array_equal(got, expected), (bins, length)


def test_a_repeated_forward_builds_no_strip_matrices(tiny_model) -> None:
    """Eager runs keep each size's matrices: a second forward at a size dispatches fewer than half the operations
    of the first (each matrix is dozens of small integer operations: kernel launches on a GPU); a new size builds
    its matrices once."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Dispatched(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    counts = []
    with torch.no_grad():
        for height, width in [(58, 94), (58, 94), (62, 98)]:
            with Dispatched() as counter:
                tiny_model(torch.zeros(1, 3, height, width))
            counts.append(counter.count)
    first, again, other = counts
    assert again < first / 2 and other == first, counts


def test_the_exported_network_builds_each_strip_matrix_once(tmp_path) -> None:
    """Every BAM runs at the same size and shares one set of strip matrices: the exported graph's index
    arithmetic does not grow with the number of BAMs (it was built in every BA: 4x for the default, 10x for the
    paper's network, each a few dozen small operations a runtime executes per call)."""
    import onnx

    from banet.config import BANetConfig
    from banet.model import BANet

    index_ops = {"Div", "Equal", "Less", "Greater", "ReduceSum", "Range", "Shape", "Where"}
    counts = []
    for bams in (1, 3):
        path = tmp_path / f"bams{bams}.onnx"
        torch.onnx.export(BANet(BANetConfig(num_bams=bams, dim_1=8, dim_2=16)).eval(), (torch.zeros(1, 3, 32, 32),),
                          str(path), input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}}, opset_version=17,
                          dynamo=False)
        nodes = onnx.load(str(path)).graph.node
        counts.append({op: sum(node.op_type == op for node in nodes) for op in index_ops})
    assert counts[0] == counts[1] and counts[0]["Equal"] > 0, counts


def test_a_matrix_kept_under_inference_mode_serves_training() -> None:
    """The runtime runs under torch.inference_mode and training in autograd, in one process (the test suite, a
    notebook): a matrix first built for the runtime must not be an inference tensor when training reuses it."""
    x = torch.randn(1, 2, 3, 131)
    with torch.inference_mode():
        strip_pool_width(x, 5)
        resize_width_nearest(torch.randn(1, 2, 3, 5), 131, 5)
    y = torch.randn(1, 2, 3, 5, requires_grad=True)
    x.requires_grad_(True)
    (resize_width_nearest(y, 131, 5).sum() + strip_pool_width(x, 5).sum()).backward()
    assert y.grad is not None and x.grad is not None
