"""Serving BANet over the network: the PyTriton HTTP server (``python -m serving.serve``), its validating front,
the client, the load test and the launcher of the tritonserver PyTriton bundles (``python -m serving.triton_server``).

The top layer, beside benchmarks and training: it may import the runtime, the model, export and calibration;
nothing imports it. What an application embeds (``from runtime import Deblurrer``) stays in ``runtime``.
"""
