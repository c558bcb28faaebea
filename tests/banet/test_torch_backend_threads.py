"""``TorchBackend(threads=N)`` (``Deblurrer(..., threads=N)`` on a checkpoint) runs its own calls on N threads and
leaves PyTorch's process-wide count as it found it: until 2026-12-05 it set the count for good, so an app's other
PyTorch work (and this project's training tests, run after such a Deblurrer) ran on one core."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch backend needs torch: pip install '.[export]'")

from banet.torch_backend import TorchBackend, intra_op_threads  # noqa: E402
from runtime import Deblurrer  # noqa: E402


@pytest.fixture
def process_threads():
    """Two threads for the process during the test (whatever the machine), put back after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_calls_run_on_the_backends_threads_and_the_process_keeps_its_own(tiny_weights, process_threads):
    backend = TorchBackend(tiny_weights, device="cpu", threads=1)
    assert torch.get_num_threads() == process_threads  # loading changed nothing
    seen = []
    backend.model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    out = backend.run(np.zeros((1, 3, 16, 16), np.float32))
    assert out.shape == (1, 3, 16, 16) and seen == [1]
    assert torch.get_num_threads() == process_threads


def test_the_count_is_put_back_when_a_call_fails(process_threads):
    with pytest.raises(RuntimeError, match="inside"), intra_op_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("failed inside")
    assert torch.get_num_threads() == process_threads


def test_a_deblurrer_on_a_checkpoint_leaves_the_process_count(tiny_weights, process_threads):
    with Deblurrer(tiny_weights, threads=1) as deblur:
        deblur(np.zeros((20, 30, 3), np.uint8))
    assert torch.get_num_threads() == process_threads
