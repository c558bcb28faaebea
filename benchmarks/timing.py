"""Timing done right: warm-up, device synchronisation (CUDA events on GPUs), percentiles, peak memory."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096
    except OSError:
        return 0


class PeakRssSampler:
    """Samples RSS every few ms in a thread; ``peak - baseline`` is the host memory a run needed."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


@dataclass
class Timing:
    samples_ms: list[float]
    warmup: int

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples_ms, 50))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.samples_ms, 95))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples_ms, 99))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)


def _sample_ms(fn: Callable[[], object], cuda: bool) -> float:
    """One call of ``fn`` in milliseconds: CUDA events and a synchronise on GPUs, wall clock on CPUs."""
    if cuda:
        import torch

        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return begin.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_call(fn: Callable[[], object], warmup: int = 2, repeats: int = 10, budget_s: float | None = None,
              cuda: bool = False) -> Timing:
    """Time ``fn`` after ``warmup`` calls; stop early once ``budget_s`` is spent (at least 3 samples).

    On CUDA, each sample is measured with CUDA events around the call and a synchronise, so asynchronous
    launches are not mistaken for latency (the mistake of the paper's timing script).
    """
    for _ in range(warmup):
        fn()
    if cuda:
        import torch

        torch.cuda.synchronize()
    samples = []
    started = time.perf_counter()
    for i in range(repeats):
        samples.append(_sample_ms(fn, cuda))
        if budget_s is not None and i >= 2 and time.perf_counter() - started > budget_s:
            break
    return Timing(samples, warmup)


def time_interleaved(fns: dict[str, tuple[Callable[[], object], bool]], repeats: int = 10,
                     budget_s: float | None = None) -> dict[str, Timing]:
    """Time already warmed-up calls in rounds, one sample of each per round: ``{name: (fn, cuda)}``.

    Peers compared in one run are interleaved so that whatever else the machine does (another process, thermal
    throttling, a noisy neighbour) falls on all of them alike instead of on whichever ran at that moment. Stops
    early once ``budget_s`` is spent (at least 3 rounds).
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    started = time.perf_counter()
    for i in range(repeats):
        for name, (fn, cuda) in fns.items():
            samples[name].append(_sample_ms(fn, cuda))
        if budget_s is not None and i >= 2 and time.perf_counter() - started > budget_s:
            break
    return {name: Timing(values, 0) for name, values in samples.items()}
