"""Keep NumPy's large arrays off transparent huge pages, where asking for them stalls a photo by seconds.

NumPy asks Linux for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on every array of 4 MB or more. Where
the kernel compacts memory to honour that on the spot (``/sys/kernel/mm/transparent_hugepage/defrag`` set to
``madvise``, Ubuntu's and Debian's default), each fresh tile, output and float copy waits for compaction, and
more so once the inference engine has fragmented memory. On the project's 2-core AMD EPYC a 3000x4000 photo
through ``python -m runtime`` on OpenVINO INT8 took 25.6 s without the advice and 30.9 s with it, measured in the
same run (``python -m benchmarks.end_to_end 3000x4000``, whose last row is that peer).

:func:`avoid_hugepage_stalls` turns the advice off for the process, once, when a ``Deblurrer`` is made. The
arrays are the same; only how the kernel backs them changes. A user who set ``NUMPY_MADVISE_HUGEPAGE`` (NumPy's
own switch, read when NumPy is imported) keeps their choice.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: NumPy's environment variable for the advice: when the user set it, their choice stands.
NUMPY_SWITCH = "NUMPY_MADVISE_HUGEPAGE"


def _numpy_setter():
    """NumPy's ``_set_madvise_hugepage(enabled) -> previous`` (private, in ``numpy._core`` from 2.0), or None."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return None
    return _set_madvise_hugepage


def avoid_hugepage_stalls() -> bool:
    """Turn NumPy's huge-page advice off for this process unless the user chose (:data:`NUMPY_SWITCH`); returns
    whether it is off now as a result of this call or an earlier one."""
    if os.environ.get(NUMPY_SWITCH) is not None:
        return False
    setter = _numpy_setter()
    if setter is None:  # a NumPy without the switch: nothing to do
        return False
    if setter(False):
        log.debug("NumPy's transparent-huge-page advice turned off (set %s=1 to keep it)", NUMPY_SWITCH)
    return True
