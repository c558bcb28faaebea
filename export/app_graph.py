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

Not inside: tiling. A large photo runs whole (memory grows with its pixels); an app tiles it or sizes it down.
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

    def reduce_max(self, x: str, axes: list[int], name: str) -> str:
        """ReduceMax over ``axes``, keepdims 0 (the axes moved from attribute to input at opset 18)."""
        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.const(name + "_axes", axes, "int64")], name, keepdims=0)
        return self.op("ReduceMax", [x], name, axes=axes, keepdims=0)


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


def _pad(b: _Builder, batch: str, height: str, width: str, metadata: ModelMetadata) -> str:
    """:func:`banet.processing.pad_to`: reflect where both paddings are shorter than their sides, else edge."""
    bottom, right = _padding(b, height, width, metadata)
    zeros = b.const("six_zeros", [0] * 6, "int64")
    pads = b.op("Concat", [zeros, bottom, right], "pads", axis=0)
    mode = metadata.conventions.pad_mode
    if mode != "reflect":
        return b.op("Pad", [batch, pads], "padded", mode=mode)
    fits = b.op("And", [b.op("Less", [bottom, height]), b.op("Less", [right, width])], "reflect_fits")
    branches = {}
    for branch, pad_mode in (("then_branch", "reflect"), ("else_branch", "edge")):
        out = f"{_P}padded_{pad_mode}"
        node = helper.make_node("Pad", [batch, pads], [out], name=out, mode=pad_mode)
        branches[branch] = helper.make_graph([node], f"{_P}pad_{pad_mode}", [],
                                             [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])
    return b.op("If", [fits], "padded", **branches)


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
    k = b.op("Range", [b.const("zero_s", 0, "int64"), _scalar(b, side, f"{label}_side_scalar"),
                       b.const("one_s", 1, "int64")], f"{label}_k")
    half, over = b.const("half", 0.5, "float32"), b.const("overlap_f", float(overlap), "float32")
    ones = b.const("ones_f", 1.0, "float32")
    rising = b.op("Div", [b.op("Add", [b.op("Cast", [k], to=TensorProto.FLOAT), half]), over], f"{label}_rising")
    back = b.op("Sub", [b.op("Sub", [_scalar(b, side, f"{label}_side_s2"), b.const("one_s", 1, "int64")]), k])
    falling = b.op("Div", [b.op("Add", [b.op("Cast", [back], to=TensorProto.FLOAT), half]), over], f"{label}_falling")
    at_start = b.op("Equal", [_scalar(b, start, f"{label}_start_s"), b.const("zero_s", 0, "int64")])
    at_end = b.op("Equal", [b.op("Add", [start, side]), length])
    up = b.op("Where", [at_start, ones, b.op("Min", [rising, ones])], f"{label}_up")
    down = b.op("Where", [_scalar(b, at_end, f"{label}_end_s"), ones,
                          b.op("Min", [falling, ones])], f"{label}_down")
    return b.op("Min", [up, down], f"{label}_weights")


def _tiled_network(b: _Builder, padded: str, network: onnx.GraphProto, net_in: str, net_out: str,
                   tile: int, overlap: int, multiple: int) -> tuple[str, list]:
    """:func:`runtime.tiling.run_tiled` as an ONNX Loop over the tiles, the network's nodes in its body; returns
    the blended raw output and the Loop node (with the network inside)."""
    shape = b.op("Shape", [padded], "padded_shape")
    lengths = {}
    for axis, label in ((2, "rows"), (3, "cols")):
        lengths[label] = b.op("Slice", [shape, b.const(f"{label}_a", [axis], "int64"),
                                        b.const(f"{label}_b", [axis + 1], "int64")], f"padded_{label}")
    th, ys = _tiling(b, lengths["rows"], tile, overlap, multiple, "rows")
    tw, xs = _tiling(b, lengths["cols"], tile, overlap, multiple, "cols")
    nx = b.op("Shape", [xs], "tiles_across")
    trips = _scalar(b, b.op("Mul", [b.op("Shape", [ys], "tiles_down"), nx]), "tile_count")
    image_zeros = b.op("ConstantOfShape", [shape], "blend_start", value=numpy_helper.from_array(
        np.zeros(1, np.float32)))
    plane = b.op("Concat", [b.const("one_one", [1, 1], "int64"), lengths["rows"], lengths["cols"]], "plane_shape",
                 axis=0)
    weight_zeros = b.op("ConstantOfShape", [plane], "weight_start", value=numpy_helper.from_array(
        np.zeros(1, np.float32)))

    outer = b.nodes
    b.nodes = []
    index, keep, acc_in, wsum_in = (f"{_P}tile_index", f"{_P}keep_going", f"{_P}blend_in", f"{_P}weight_in")
    i = b.op("Unsqueeze", [index, b.const("axis0", [0], "int64")], "tile_index_1")
    y = b.op("Gather", [ys, b.op("Div", [i, nx], "row_of_tile")], "y", axis=0)
    x = b.op("Gather", [xs, b.op("Mod", [i, nx], "col_of_tile")], "x", axis=0)
    starts = b.op("Concat", [y, x], "tile_starts", axis=0)
    ends = b.op("Concat", [b.op("Add", [y, th]), b.op("Add", [x, tw])], "tile_ends", axis=0)
    b.nodes.append(helper.make_node("Slice", [padded, starts, ends, b.const("hw_axes", [2, 3], "int64")], [net_in],
                                    name=_P + "tile"))
    b.nodes.extend(network.node)
    wy = b.op("Unsqueeze", [_ramp(b, th, y, lengths["rows"], overlap, "wy"), b.const("axis1", [1], "int64")])
    wx = b.op("Unsqueeze", [_ramp(b, tw, x, lengths["cols"], overlap, "wx"), b.const("axis0b", [0], "int64")])
    weight = b.op("Mul", [wy, wx], "tile_weight")
    weighted = b.op("Mul", [net_out, weight], "weighted")
    after = b.op("Sub", [b.op("Sub", [lengths["rows"], y]), th], "rows_after")
    right = b.op("Sub", [b.op("Sub", [lengths["cols"], x]), tw], "cols_after")
    zeros2 = b.const("two_zeros", [0, 0], "int64")
    place = b.op("Concat", [zeros2, y, x, zeros2, after, right], "placement", axis=0)
    acc_out = b.op("Add", [acc_in, b.op("Pad", [weighted, place], "placed")], "blend_out")
    weight4 = b.op("Unsqueeze", [weight, b.const("axes01", [0, 1], "int64")], "tile_weight_4d")
    wsum_out = b.op("Add", [wsum_in, b.op("Pad", [weight4, place], "placed_weight")], "weight_out")
    keep_out = b.op("Identity", [keep], "keep_going_out")
    body_nodes, b.nodes = b.nodes, outer

    float_any = helper.make_tensor_value_info
    body = helper.make_graph(
        body_nodes, f"{_P}tile_body",
        [helper.make_tensor_value_info(index, TensorProto.INT64, []),
         helper.make_tensor_value_info(keep, TensorProto.BOOL, []),
         float_any(acc_in, TensorProto.FLOAT, None), float_any(wsum_in, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(keep_out, TensorProto.BOOL, []),
         float_any(acc_out, TensorProto.FLOAT, None), float_any(wsum_out, TensorProto.FLOAT, None)],
        value_info=list(network.value_info))
    blended, weights = b.op("Loop", [trips, "", image_zeros, weight_zeros], "tiles", outputs=2, body=body)
    return b.op("Div", [blended, weights], "blended"), body_nodes


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
    if opset < 13:
        raise ValueError(f"the network's opset {opset} is older than 13, the least the app graph's operators need")
    model = copy.deepcopy(network)
    graph = model.graph
    net_in, net_out = metadata.input_name, metadata.output_name
    b = _Builder(opset)

    # pre: uint8 NHWC (alpha dropped) -> [0, 1] -> the network's channel order -> NCHW -> offset -> padded
    shape = b.op("Shape", [INPUT], "image_shape")
    height = b.op("Slice", [shape, b.const("h_start", [1], "int64"), b.const("h_end", [2], "int64")], "height")
    width = b.op("Slice", [shape, b.const("w_start", [2], "int64"), b.const("w_end", [3], "int64")], "width")
    rgb = b.op("Slice", [INPUT, b.const("c_start", [0], "int64"), b.const("c_end", [3], "int64"),
                         b.const("c_axis", [3], "int64")], "colour")
    unit = b.op("Div", [b.op("Cast", [rgb], "as_float", to=TensorProto.FLOAT), b.const("max_in", 255.0, "float32")],
                "unit")
    order = _channel_indices(channel_order, conventions.channel_order)
    if order is not None:
        unit = b.op("Gather", [unit, b.const("to_network_order", order, "int64")], "network_order", axis=3)
    nchw = b.op("Transpose", [unit], "nchw", perm=[0, 3, 1, 2])
    shifted = b.op("Add", [nchw, b.const("offset_in", conventions.offset, "float32")], "shifted")
    padded = _pad(b, shifted, height, width, metadata)
    if tile is None:  # the network inline, between the steps before and after it
        b.nodes.append(helper.make_node("Identity", [padded], [net_in], name=_P + "network_input"))
        b.nodes.extend(graph.node)
        raw = net_out
    else:
        raw, _ = _tiled_network(b, padded, graph, net_in, net_out, tile, overlap, conventions.size_multiple)

    # post: finite check on the whole output (as banet.processing.postprocess) -> crop -> clamp -> [0, 1] -> NHWC
    # -> the app's channel order -> uint8
    bad = b.op("Or", [b.op("IsNaN", [raw]), b.op("IsInf", [raw])], "non_finite")
    any_bad = b.reduce_max(b.op("Cast", [bad], "non_finite_float", to=TensorProto.FLOAT), [1, 2, 3], "any_non_finite")
    b.nodes.append(helper.make_node("Not", [b.op("Cast", [any_bad], "any_bool", to=TensorProto.BOOL)], [FINITE],
                                    name=_P + "finite"))
    ends = b.op("Concat", [height, width], "crop_ends", axis=0)
    cropped = b.op("Slice", [raw, b.const("crop_starts", [0, 0], "int64"), ends,
                             b.const("crop_axes", [2, 3], "int64")], "cropped")
    clamped = b.op("Clip", [cropped, b.const("clamp_min", conventions.clamp_min, "float32"),
                            b.const("clamp_max", conventions.clamp_max, "float32")], "clamped")
    unit_out = b.op("Sub", [clamped, b.const("offset_out", conventions.offset, "float32")], "unit_out")
    nhwc = b.op("Transpose", [unit_out], "nhwc", perm=[0, 2, 3, 1])
    order = _channel_indices(conventions.channel_order, channel_order)
    if order is not None:
        nhwc = b.op("Gather", [nhwc, b.const("to_app_order", order, "int64")], "app_order", axis=3)
    scaled = b.op("Round", [b.op("Mul", [nhwc, b.const("max_out", 255.0, "float32")], "scaled")], "rounded")
    clipped = b.op("Clip", [scaled, b.const("zero", 0.0, "float32"), b.const("max_clip", 255.0, "float32")],
                   "clipped")
    b.nodes.append(helper.make_node("Cast", [clipped], [OUTPUT], name=_P + "to_uint8", to=TensorProto.UINT8))

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
