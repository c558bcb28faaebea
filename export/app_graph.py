"""An app graph: the exported network with the project's pre- and post-processing inside, uint8 images in and out.

An app in Kotlin, Swift, C#, C++ or JavaScript that links only ONNX Runtime (ORT Mobile on a phone, onnxruntime-web
in a browser) has no :mod:`banet.processing` to call. The app graph does it in ONNX operators: it takes
``image`` uint8 ``[N, H, W, C]`` (C = 3, or 4 with the alpha channel ignored: an Android ``Bitmap``'s or a canvas's
RGBA bytes as they are) in the channel order chosen at export (RGB by default), and gives ``deblurred`` uint8
``[N, H, W, 3]`` in the same order, same size, plus ``finite`` bool ``[N]``: false where the network overflowed
(an FP16 NaN), the one case the runtime refuses (:class:`banet.processing.NonFiniteOutputError`) and a graph
cannot raise.

Each step is the ONNX form of the one implementation, in the same order and float32 arithmetic:
:func:`~banet.processing.to_unit_range` (divide by 255), :func:`~banet.processing.reorder_channels`, the
conventions' offset, :func:`~banet.processing.pad_to` (bottom/right up to the size multiple and the export's
smallest size; reflect where the padding is shorter than the side, else edge), and on the way out
:func:`~banet.processing.crop`, the clamp, the offset, ``x * 255`` rounded half to even (``np.rint``) and clipped.
:mod:`export.app_check` holds the result to pixel equality with that numpy path on the same network file.

With a tile size, the network runs inside an ONNX ``Loop`` over evenly sized overlapping tiles
(:func:`runtime.tiling.even_tile`, :func:`~runtime.tiling.tile_starts`), each output weighted by the runtime's
ramps and summed, then divided by the summed weights, as :func:`runtime.tiling.run_tiled` does; float sums are
held for one strip of tiles at a time (:func:`_tiled`), so memory is a tile's network and a strip whatever the
photo's size.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from banet.metadata import APP_GRAPH_KEY, ModelMetadata

log = logging.getLogger(__name__)

INPUT, OUTPUT, FINITE = "image", "deblurred", "finite"
#: Channel orders an app graph can take (the input's alpha channel, if any, is the fourth and is ignored).
CHANNEL_ORDERS = ("RGB", "BGR")
_P = "app/"  # prefix of every name this module adds, so none collides with the network's


class _Builder:
    """Collects the nodes and constants of the wrapper around the network."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: dict[str, np.ndarray] = {}
        self._count = 0

    def const(self, name: str, values, dtype) -> str:
        """An initializer named ``name`` (made once: a second call with the same name returns the first)."""
        array = np.asarray(values, dtype=dtype)
        if _P + name in self._constants:
            if not np.array_equal(self._constants[_P + name], array):
                raise ValueError(f"constant {name} defined twice with different values")
            return _P + name
        self._constants[_P + name] = array
        self.initializers.append(numpy_helper.from_array(array, _P + name))
        return _P + name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, outputs: int = 1, **attrs) -> str | list:
        self._count += 1
        base = _P + (name or f"{op_type.lower()}_{self._count}")
        names = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=base, **attrs))
        return names[0] if outputs == 1 else names


def _channel_indices(source: str, target: str) -> list[int] | None:
    """Indices that reorder ``source`` channels into ``target`` order, None when they are the same order."""
    return None if source == target else [source.index(c) for c in target]


def _padding(b: _Builder, height: str, width: str, metadata: ModelMetadata) -> tuple[str, str]:
    """Rows and columns :func:`banet.processing.padded_size` adds: up to the export's smallest side, then the
    size multiple (each a 1-element int64 tensor)."""
    multiple = metadata.conventions.size_multiple
    minimum = b.const("min_side", [metadata.min_size], "int64")
    step, round_up = b.const("multiple", [multiple], "int64"), b.const("multiple_less_1", [multiple - 1], "int64")
    added = []
    for side, label in ((height, "bottom"), (width, "right")):
        at_least = b.op("Max", [side, minimum], f"{label}_at_least_min")
        padded = b.op("Mul", [b.op("Div", [b.op("Add", [at_least, round_up]), step]), step], f"{label}_padded")
        added.append(b.op("Sub", [padded, side], label))
    return added[0], added[1]


def _pad(b: _Builder, images: str, height: str, width: str, metadata: ModelMetadata) -> str:
    """:func:`banet.processing.pad_to` on the uint8 NHWC images (padding copies values, so padding before the
    conversion to float gives the same numbers at a quarter of the memory): reflect where both paddings are shorter
    than their sides, else edge."""
    bottom, right = _padding(b, height, width, metadata)
    zero = b.const("zero_i", [0], "int64")  # [N, H, W, C]: every begin 0; ends 0, bottom, right, 0
    pads = b.op("Concat", [b.const("four_zeros", [0] * 4, "int64"), zero, bottom, right, zero], "pads", axis=0)
    mode = metadata.conventions.pad_mode
    if mode != "reflect":
        return b.op("Pad", [images, pads], "padded", mode=mode)
    fits = b.op("And", [b.op("Less", [bottom, height]), b.op("Less", [right, width])], "reflect_fits")
    branches = {}
    for branch, pad_mode in (("then_branch", "reflect"), ("else_branch", "edge")):
        out = f"{_P}padded_{pad_mode}"
        node = helper.make_node("Pad", [images, pads], [out], name=out, mode=pad_mode)
        branches[branch] = helper.make_graph([node], f"{_P}pad_{pad_mode}", [],
                                             [helper.make_tensor_value_info(out, TensorProto.UINT8, None)])
    return b.op("If", [fits], "padded", **branches)


def _network_input(b: _Builder, images: str, net_in: str, channel_order: str, metadata: ModelMetadata) -> None:
    """uint8 NHWC (padded) -> ``net_in``: :func:`~banet.processing.to_unit_range`, the network's channel order, NCHW,
    the conventions' offset (per tile inside the tiles' Loop, so no photo-sized float copy is ever made)."""
    conventions = metadata.conventions
    unit = b.op("Div", [b.op("Cast", [images], "as_float", to=TensorProto.FLOAT),
                        b.const("max_in", 255.0, "float32")], "unit")
    order = _channel_indices(channel_order, conventions.channel_order)
    if order is not None:
        unit = b.op("Gather", [unit, b.const("to_network_order", order, "int64")], "network_order", axis=3)
    nchw = b.op("Transpose", [unit], "nchw", perm=[0, 3, 1, 2])
    b.nodes.append(helper.make_node("Add", [nchw, b.const("offset_in", conventions.offset, "float32")], [net_in],
                                    name=_P + "network_input"))


def _scalar(b: _Builder, value: str, name: str) -> str:
    """A 1-element int64 tensor as a 0-d one (Range and Loop take scalars)."""
    return b.op("Squeeze", [value, b.const(name + "_axis", [0], "int64")], name)


def _tiling(b: _Builder, length: str, tile: int, overlap: int, multiple: int, label: str) -> tuple[str, str]:
    """The tile side and start offsets along one padded side (1-element / 1-D int64): as
    :func:`runtime.tiling.even_tile` and :func:`runtime.tiling.tile_starts`."""
    one = b.const("one", [1], "int64")
    big, step = b.const("tile", [tile], "int64"), b.const("tile_stride", [tile - overlap], "int64")
    over, mult = b.const("overlap", [overlap], "int64"), b.const("multiple_t", [multiple], "int64")

    def ceil_div(a: str, d: str, name: str) -> str:
        return b.op("Div", [b.op("Sub", [b.op("Add", [a, d]), one]), d], name)

    beyond = b.op("Max", [b.op("Sub", [length, big]), b.const("zero_i", [0], "int64")], f"{label}_beyond_tile")
    count = b.op("Add", [ceil_div(beyond, step, f"{label}_more_tiles"), one], f"{label}_tiles")
    covered = b.op("Add", [length, b.op("Mul", [b.op("Sub", [count, one]), over])], f"{label}_covered")
    side = ceil_div(covered, count, f"{label}_even_side")
    tile_side = b.op("Mul", [ceil_div(side, mult, f"{label}_multiples"), mult], f"{label}_tile")
    last = b.op("Sub", [length, tile_side], f"{label}_last_start")
    # Max 1: a single tile (an image smaller than the overlap too) has no stride, and Range refuses a zero step
    stride = _scalar(b, b.op("Max", [b.op("Sub", [tile_side, over]), one]), f"{label}_stride")
    inner = b.op("Range", [b.const("zero_s", 0, "int64"), _scalar(b, last, f"{label}_last_scalar"), stride],
                 f"{label}_inner_starts")
    return tile_side, b.op("Concat", [inner, last], f"{label}_starts", axis=0)


def _ramp(b: _Builder, side: str, start: str, length: str, overlap: int, label: str) -> str:
    """:func:`runtime.tiling._ramp` as operators: float32 weights over a tile of ``side`` at ``start``, rising
    ``(k + 0.5) / overlap`` from inner edges, 1 at the image's borders."""
    side_s = _scalar(b, side, f"{label}_side_scalar")
    k = b.op("Range", [b.const("zero_s", 0, "int64"), side_s, b.const("one_s", 1, "int64")], f"{label}_k")
    half, over = b.const("half", 0.5, "float32"), b.const("overlap_f", float(overlap), "float32")
    ones = b.const("ones_f", 1.0, "float32")
    rising = b.op("Div", [b.op("Add", [b.op("Cast", [k], to=TensorProto.FLOAT), half]), over], f"{label}_rising")
    back = b.op("Sub", [b.op("Sub", [side_s, b.const("one_s", 1, "int64")]), k])
    falling = b.op("Div", [b.op("Add", [b.op("Cast", [back], to=TensorProto.FLOAT), half]), over], f"{label}_falling")
    at_start = b.op("Equal", [_scalar(b, start, f"{label}_start_s"), b.const("zero_s", 0, "int64")])
    at_end = b.op("Equal", [b.op("Add", [start, side]), length])
    up = b.op("Where", [at_start, ones, b.op("Min", [rising, ones])], f"{label}_up")
    down = b.op("Where", [_scalar(b, at_end, f"{label}_end_s"), ones,
                          b.op("Min", [falling, ones])], f"{label}_down")
    return b.op("Min", [up, down], f"{label}_weights")


def _subgraph(name: str, inputs: list[tuple[str, int, list | None]],
              outputs: list[tuple[str, int, list | None]], nodes: list, value_info=()) -> onnx.GraphProto:
    """A Loop body: ``inputs``/``outputs`` as (name, element type, shape or None)."""
    info = helper.make_tensor_value_info
    return helper.make_graph(nodes, _P + name, [info(n, t, sh) for n, t, sh in inputs],
                             [info(n, t, sh) for n, t, sh in outputs], value_info=list(value_info))


def _in_body(b: _Builder, build) -> list:
    """The nodes ``build()`` adds, collected for a subgraph instead of the graph being built."""
    outer, b.nodes = b.nodes, []
    try:
        build()
        return b.nodes
    finally:
        b.nodes = outer


def _tiled(b: _Builder, padded: str, network: onnx.GraphProto, net_in: str, net_out: str, channel_order: str,
           metadata: ModelMetadata, tile: int, overlap: int) -> tuple[str, str]:
    """:func:`runtime.tiling.run_tiled` as one ONNX Loop over the tiles of the padded uint8 NHWC images, row by row
    (each tile converted to a network input and run through the network's nodes in the Loop's body).

    Only a strip of float sums one tile high is held: the tiles of a row add their weighted outputs into it; after
    the row's last tile (an If), the rows no later tile reaches are divided by their weights and turned into uint8
    pixels (:func:`_pixels`), and the strip moves down, keeping the sums of the rows the next row of tiles shares,
    so every pixel sums its tiles in the order ``run_tiled`` does, exactly. (The network stays one level deep: in
    a Loop nested in a Loop, ONNX Runtime ran its convolutions 2.4x slower.) Returns the uint8 pixels
    ``[H, W, N, 3]`` (padded) and each image's sum of raw outputs (``[N]``, for ``finite``)."""
    shape = b.op("Shape", [padded], "padded_shape")
    side = {}
    for axis, label in ((1, "rows"), (2, "cols")):
        side[label] = b.op("Slice", [shape, b.const(f"{label}_a", [axis], "int64"),
                                     b.const(f"{label}_b", [axis + 1], "int64")], f"padded_{label}")
    multiple = metadata.conventions.size_multiple
    th, ys = _tiling(b, side["rows"], tile, overlap, multiple, "rows")
    tw, xs = _tiling(b, side["cols"], tile, overlap, multiple, "cols")
    next_ys = b.op("Concat", [ys, side["rows"]], "next_row_starts", axis=0)  # each row's successor; the last: H
    nx = b.op("Shape", [xs], "tiles_across")
    last_col = b.op("Sub", [nx, b.const("one", [1], "int64")], "last_col")
    trips = _scalar(b, b.op("Mul", [b.op("Shape", [ys], "tiles_down"), nx]), "tile_count")
    batch = b.op("Slice", [shape, b.const("n_a", [0], "int64"), b.const("one", [1], "int64")], "batch")
    three, one_one = b.const("three", [3], "int64"), b.const("one_one", [1, 1], "int64")
    zero = numpy_helper.from_array(np.zeros(1, np.float32))
    empty, axis0 = b.const("zero_i", [0], "int64"), b.const("axis0", [0], "int64")
    strip_zeros = b.op("ConstantOfShape", [b.op("Concat", [th, side["cols"], batch, three], axis=0)], "strip_start",
                       value=zero)
    weight_zeros = b.op("ConstantOfShape", [b.op("Concat", [th, side["cols"], one_one], axis=0)],
                        "strip_weights_start", value=zero)
    no_pixels = b.op("ConstantOfShape", [b.op("Concat", [empty, side["cols"], batch, three], axis=0)], "no_pixels",
                     value=numpy_helper.from_array(np.zeros(1, np.uint8)))
    no_totals = b.op("ConstantOfShape", [batch], "no_totals", value=zero)
    f, u8, i64, flag = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT64, TensorProto.BOOL
    names = ("tile_index", "keep_going", "strip_in", "strip_weights_in", "pixels_in", "totals_in")
    index, keep, strip_in, strip_w_in, pixels_in, totals_in = (_P + n for n in names)
    #: what each tile hands the next (after the Loop's condition), with the names each If branch gives it
    handed = (("strip_out", f, "moved_strip", "same_strip"), ("strip_weights_out", f, "moved_weights", "same_weights"),
              ("pixels_out", u8, "more_pixels", "same_pixels"), ("totals_out", f, "more_totals", "same_totals"))
    # where a tile's pixels go in the strip: its rows are always the strip's rows 0..th (the same for every tile)
    one_s = b.const("one_s", 1, "int64")
    grid = b.op("Concat", [th, tw, b.const("one", [1], "int64")], "grid_shape", axis=0)
    strip_rows = b.op("Range", [b.const("zero_s", 0, "int64"), _scalar(b, th, "th_s"), one_s], "strip_rows")
    at_rows = b.op("Expand", [b.op("Unsqueeze", [strip_rows, b.const("axes12", [1, 2], "int64")]), grid], "at_rows")
    carried = {}

    def row_done() -> None:  # then-branch: the finished rows become pixels, the strip moves down
        done = b.op("Sub", [carried["y_next"], carried["y"]], "finished_rows")
        raw = b.op("Div", [b.op("Slice", [carried["strip"], empty, done, axis0], "finished_sums"),
                           b.op("Slice", [carried["strip_w"], empty, done, axis0], "finished_weights")],
                   "finished_raw")
        rest = b.const("to_the_end", [2**62], "int64")
        fresh = b.op("Concat", [done, side["cols"], batch, three], "fresh_shape", axis=0)
        fresh_w = b.op("Concat", [done, side["cols"], one_one], "fresh_weights_shape", axis=0)
        b.op("Concat", [b.op("Slice", [carried["strip"], done, rest, axis0], "shared_sums"),
                        b.op("ConstantOfShape", [fresh], value=zero)], "moved_strip", axis=0)
        b.op("Concat", [b.op("Slice", [carried["strip_w"], done, rest, axis0], "shared_weights"),
                        b.op("ConstantOfShape", [fresh_w], value=zero)], "moved_weights", axis=0)
        b.op("Concat", [pixels_in, _pixels(b, raw, channel_order, metadata)], "more_pixels", axis=0)
        b.op("Add", [totals_in, b.op("ReduceSum", [raw, b.const("all_but_batch", [0, 1, 3], "int64")],
                                     "strip_sums", keepdims=0)], "more_totals")

    def row_going_on() -> None:  # else-branch: the strip and the pixels as they are
        for source, (_, _, _, name) in zip((carried["strip"], carried["strip_w"], pixels_in, totals_in), handed):
            b.op("Identity", [source], name)

    def one_tile() -> None:  # the Loop's body: tile (row, col) added into the strip
        i = b.op("Unsqueeze", [index, axis0], "tile_index_1")
        r, c = b.op("Div", [i, nx], "tile_row"), b.op("Mod", [i, nx], "tile_col")
        y = carried["y"] = b.op("Gather", [ys, r], "y", axis=0)
        carried["y_next"] = b.op("Gather", [next_ys, b.op("Add", [r, b.const("one", [1], "int64")])], "y_next",
                                 axis=0)
        x = b.op("Gather", [xs, c], "x", axis=0)
        x_end = b.op("Add", [x, tw], "x_end")
        pixels = b.op("Slice", [padded, b.op("Concat", [y, x], "tile_starts", axis=0),
                                b.op("Concat", [b.op("Add", [y, th]), x_end], "tile_ends", axis=0),
                                b.const("hw_axes", [1, 2], "int64")], "tile_pixels")
        _network_input(b, pixels, net_in, channel_order, metadata)
        b.nodes.extend(network.node)
        wy = b.op("Unsqueeze", [_ramp(b, th, y, side["rows"], overlap, "wy"), b.const("axis1", [1], "int64")])
        wx = b.op("Unsqueeze", [_ramp(b, tw, x, side["cols"], overlap, "wx"), axis0])
        weight = b.op("Mul", [wy, wx], "tile_weight")
        weighted = b.op("Transpose", [b.op("Mul", [net_out, weight], "weighted")], "weighted_hwnc",
                        perm=[2, 3, 0, 1])
        cols = b.op("Range", [_scalar(b, x, "x_s"), _scalar(b, x_end, "x_end_s"), one_s], "tile_cols")
        at_cols = b.op("Expand", [b.op("Unsqueeze", [cols, b.const("axes02", [0, 2], "int64")]), grid])
        where = b.op("Concat", [at_rows, at_cols], "tile_where", axis=2)
        carried["strip"] = b.op("ScatterND", [strip_in, where, weighted], "strip_added", reduction="add")
        weight4 = b.op("Unsqueeze", [weight, b.const("axes23", [2, 3], "int64")], "tile_weight_hw11")
        carried["strip_w"] = b.op("ScatterND", [strip_w_in, where, weight4], "strip_weights_added", reduction="add")
        branches = {}
        for branch, build, which in (("then_branch", row_done, 2), ("else_branch", row_going_on, 3)):
            nodes = _in_body(b, build)
            branches[branch] = _subgraph(branch, [], [(_P + h[which], h[1], None) for h in handed], nodes)
        last = _scalar(b, b.op("Equal", [c, last_col]), "row_ends_here")
        for (name, *_), value in zip(handed, b.op("If", [last], "row_end", outputs=len(handed), **branches)):
            b.op("Identity", [value], name)
        b.op("Identity", [keep], "keep_going_out")

    body = _subgraph("tile_body", [(index, i64, []), (keep, flag, []), (strip_in, f, None),
                                      (strip_w_in, f, None), (pixels_in, u8, None), (totals_in, f, None)],
                     [(f"{_P}keep_going_out", flag, []), *((_P + name, kind, None) for name, kind, *_ in handed)],
                     _in_body(b, one_tile), network.value_info)
    _, _, pixels, totals = b.op("Loop", [trips, "", strip_zeros, weight_zeros, no_pixels, no_totals], "tiles",
                                outputs=4, body=body)
    return pixels, totals


def _pixels(b: _Builder, raw_hwnc: str, channel_order: str, metadata: ModelMetadata) -> str:
    """Raw network output ``[H, W, N, 3]`` -> uint8 in the app's channel order, as
    :func:`banet.processing.postprocess` computes it: clamped, back to [0, 1], ``x * 255`` rounded half to even and
    clipped (every step per value, so it is the same on a strip of rows as on the whole image)."""
    conventions = metadata.conventions
    clamped = b.op("Clip", [raw_hwnc, b.const("clamp_min", conventions.clamp_min, "float32"),
                            b.const("clamp_max", conventions.clamp_max, "float32")], "clamped")
    unit = b.op("Sub", [clamped, b.const("offset_out", conventions.offset, "float32")], "unit_out")
    order = _channel_indices(conventions.channel_order, channel_order)
    if order is not None:
        unit = b.op("Gather", [unit, b.const("to_app_order", order, "int64")], "app_order", axis=3)
    scaled = b.op("Round", [b.op("Mul", [unit, b.const("max_out", 255.0, "float32")], "scaled")], "rounded")
    clipped = b.op("Clip", [scaled, b.const("zero", 0.0, "float32"), b.const("max_clip", 255.0, "float32")],
                   "clipped")
    return b.op("Cast", [clipped], "as_uint8", to=TensorProto.UINT8)


def _outputs(b: _Builder, pixels_hwnc: str, totals: str, height: str, width: str) -> None:
    """``deblurred``: the uint8 pixels cropped to the input's size, ``[N, H, W, 3]``; ``finite``: whether each
    image's sum of raw outputs is finite (a NaN or an infinity anywhere, what :func:`banet.processing.postprocess`
    refuses, makes it NaN or infinite; the sum of finite outputs of this network cannot overflow float32)."""
    bad = b.op("Or", [b.op("IsNaN", [totals]), b.op("IsInf", [totals])], "non_finite")
    b.nodes.append(helper.make_node("Not", [bad], [FINITE], name=_P + "finite"))
    cropped = b.op("Slice", [pixels_hwnc, b.const("crop_starts", [0, 0], "int64"),
                             b.op("Concat", [height, width], "crop_ends", axis=0),
                             b.const("crop_axes", [0, 1], "int64")], "cropped")
    b.nodes.append(helper.make_node("Transpose", [cropped], [OUTPUT], name=_P + "nhwc", perm=[2, 0, 1, 3]))


def wrap_for_apps(network: onnx.ModelProto, metadata: ModelMetadata, channel_order: str = "RGB",
                  tile: int | None = None, overlap: int = 32) -> onnx.ModelProto:
    """The app graph of ``network`` (an export of this project, described by ``metadata``): uint8 ``[N, H, W, 3|4]``
    in ``channel_order`` -> uint8 ``[N, H, W, 3]`` and ``finite`` bool ``[N]`` (module docstring).

    With ``tile``, images run in evenly sized overlapping tiles of at most ``tile`` x ``tile`` (blended as the runtime
    blends them), so memory stays bounded whatever the photo's size; an image within one tile runs whole."""
    channel_order = channel_order.upper()
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel order {channel_order!r}: an app graph takes one of {', '.join(CHANNEL_ORDERS)}")
    conventions = metadata.conventions
    if tile is not None and (tile % conventions.size_multiple or tile < metadata.min_size or tile <= 2 * overlap
                             or overlap <= 0):
        raise ValueError(f"tile {tile} with overlap {overlap}: a tile is a multiple of {conventions.size_multiple}, "
                         f"at least {metadata.min_size} and more than twice the overlap, which is at least 1")
    opset = next((o.version for o in network.opset_import if o.domain in ("", "ai.onnx")), 0)
    least = 13 if tile is None else 16  # ScatterND adds (the tiles' sums) from opset 16
    if opset < least:
        raise ValueError(f"the network's opset {opset} is older than {least}, the least the app graph's operators "
                         "need" + (" with tiles" if tile is not None else ""))
    model = copy.deepcopy(network)
    graph = model.graph
    net_in, net_out = metadata.input_name, metadata.output_name
    b = _Builder(opset)

    # pre: uint8 NHWC, alpha dropped, padded (still uint8); then per tile (or whole) the network's input
    shape = b.op("Shape", [INPUT], "image_shape")
    height = b.op("Slice", [shape, b.const("h_start", [1], "int64"), b.const("h_end", [2], "int64")], "height")
    width = b.op("Slice", [shape, b.const("w_start", [2], "int64"), b.const("w_end", [3], "int64")], "width")
    colour = b.op("Slice", [INPUT, b.const("c_start", [0], "int64"), b.const("c_end", [3], "int64"),
                            b.const("c_axis", [3], "int64")], "colour")
    padded = _pad(b, colour, height, width, metadata)
    if tile is None:  # the network inline, between the steps before and after it
        _network_input(b, padded, net_in, channel_order, metadata)
        b.nodes.extend(graph.node)
        raw = b.op("Transpose", [net_out], "raw_hwnc", perm=[2, 3, 0, 1])
        totals = b.op("ReduceSum", [raw, b.const("all_but_batch", [0, 1, 3], "int64")], "image_sums", keepdims=0)
        pixels = _pixels(b, raw, channel_order, metadata)
    else:
        pixels, totals = _tiled(b, padded, graph, net_in, net_out, channel_order, metadata, tile, overlap)
    _outputs(b, pixels, totals, height, width)

    del graph.node[:]
    graph.node.extend(b.nodes)
    if tile is not None:
        del graph.value_info[:]  # the network's intermediate tensors live in the Loop's body now
    graph.initializer.extend(b.initializers)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", "height", "width", "channels"],
                                                     doc_string=f"uint8 {channel_order} images (a 4th channel, "
                                                                "alpha, is ignored)"))
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(OUTPUT, TensorProto.UINT8, ["batch", "height", "width", 3],
                                      doc_string=f"uint8 {channel_order} deblurred images, the input's size"),
        helper.make_tensor_value_info(FINITE, TensorProto.BOOL, ["batch"],
                                      doc_string="false where the network overflowed: that image is garbage"),
    ])
    kept = {p.key: p.value for p in model.metadata_props}
    kept.update({APP_GRAPH_KEY: "app", "banet.app_channel_order": channel_order, "banet.app_input": INPUT,
                 "banet.app_output": OUTPUT})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, kept)
    model.doc_string = (f"BANet deblurring, uint8 {channel_order} images in and out (pre/post-processing inside); "
                        "made by banet-deploy export/to_app.py")
    onnx.checker.check_model(model)
    return model


def save_ort_format(onnx_file: Path, ort_file: Path, config_file: Path | None = None) -> None:
    """Convert ``onnx_file`` to the ORT format ORT Mobile loads, with ONNX Runtime's own converter (fixed
    optimizations, none specific to this CPU: its ``arm`` target leaves out the x86 NCHWc layout), writing
    ``ort_file`` and, where given, the operator list a reduced ORT Mobile build needs (``config_file``)."""
    import contextlib
    import io
    import shutil
    import tempfile

    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    for name in list(logging.root.manager.loggerDict):  # its modules log progress at INFO on loggers of their own
        if name.startswith("ort_format_model"):
            logging.getLogger(name).setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(dir=ort_file.parent, prefix=".ort-") as tmp:
        source = Path(tmp) / "model.onnx"
        shutil.copyfile(onnx_file, source)
        said = io.StringIO()
        with contextlib.redirect_stdout(said):  # the converter prints its progress
            convert_onnx_models_to_ort(source, Path(tmp) / "out", [OptimizationStyle.Fixed], target_platform="arm")
        log.debug("%s", said.getvalue())
        made = Path(tmp) / "out" / "model.ort"
        configs = sorted((Path(tmp) / "out").glob("*.config"))
        if not made.is_file():
            raise RuntimeError(f"ONNX Runtime's converter wrote no ORT file: {said.getvalue().strip()[-300:]}")
        if config_file is not None and configs:
            shutil.move(configs[0], config_file)
        shutil.move(made, ort_file)
