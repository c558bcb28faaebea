"""A decoded video frame's geometry: turned upright as its display matrix says, padded to sizes encoders take."""

from __future__ import annotations

import numpy as np


def even_frame(frame: np.ndarray, minimum: int = 2) -> np.ndarray:
    """``frame`` with an odd height or width padded by one row/column repeating its edge: H.264 in 4:2:0 stores
    only even sizes, and a smaller frame would lose its last row and column unsaid. ``minimum`` (even): a smaller
    side is padded up to it the same way (x265 refuses frames under 16 pixels a side)."""
    height, width = (max(minimum, side + side % 2) for side in frame.shape[:2])
    bottom, right = height - frame.shape[0], width - frame.shape[1]
    if not (bottom or right):
        return frame
    return np.pad(frame, ((0, bottom), (0, right)) + ((0, 0),) * (frame.ndim - 2), mode="edge")


def _display_matrix(frame) -> np.ndarray | None:
    """The 3x3 display matrix (16.16 fixed point, row by row) PyAV ``frame`` carries, or None."""
    try:
        data = frame.side_data.get("DISPLAYMATRIX")
        return None if data is None else np.frombuffer(bytes(data), np.int32)[:9]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def clockwise(frame) -> int:
    """The quarter turn the display matrix of ``frame`` asks for, clockwise in degrees (0, 90, 180 or 270):
    FFmpeg's angle (PyAV's ``VideoFrame.rotation``, counter-clockwise) to the nearest quarter."""
    angle = getattr(frame, "rotation", 0) or 0
    return -round(angle / 90) * 90 % 360 if np.isfinite(angle) else 0


def upright(frame, array: np.ndarray) -> np.ndarray:
    """``array`` (the pixels of PyAV ``frame``) turned and mirrored as the file's display matrix says, with the
    rules of FFmpeg's own player (ffplay's autorotate): a turn by quarters, then the mirroring the matrix adds.
    Before, only the turn was read: a mirrored matrix (some front cameras, editing apps' "flip") came out upside
    down instead of mirrored."""
    matrix = _display_matrix(frame)
    if matrix is None:
        return array
    turn = clockwise(frame)
    if turn == 90:
        turned = array.swapaxes(0, 1) if matrix[3] > 0 else np.rot90(array, -1)
    elif turn == 270:
        turned = np.rot90(array, -1)[::-1] if matrix[3] < 0 else np.rot90(array, 1)
    else:  # 180 is a mirroring left-right and one top-bottom; a single one of them is a mirrored matrix
        turned = array[:, ::-1] if turn == 180 and matrix[0] < 0 else array
        turned = turned[::-1] if matrix[4] < 0 else turned
    return array if turned is array else np.ascontiguousarray(turned)
