"""The layer contract: imports point down, never up, including imports inside functions; no import cycles.

    core (numpy only) <- runtime <- model (torch) <- export, calibration <- benchmarks, training, serving

``runtime`` is what an application embeds; the HTTP server and its tools are the top-level ``serving``.

Every ``import`` statement of every module is read with :mod:`ast` (so an import hidden in a function counts);
``from banet import X`` is resolved through ``banet``'s lazy name table to the module that defines ``X``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("banet", "runtime", "export", "calibration", "benchmarks", "training", "serving")

CORE = ("banet", "banet.config", "banet.conventions", "banet.processing", "banet.outputs", "banet.manifest",
        "banet.metadata", "banet.defaults", "banet.errors", "banet.hashing", "banet.onnx_wire", "banet.paths",
        "banet.machine", "banet.cli_types")
MODEL = ("banet.model", "banet.folding", "banet.pooling", "banet.checkpoint", "banet.torch_backend",
         "banet.cuda_graphs")
#: (layer name, module prefixes, third-party packages the layer must not import)
LAYERS = (
    ("core", CORE, None),  # None: the standard library and numpy only
    ("runtime", ("runtime",), {"torch", "onnx", "onnxscript", "onnxslim", "safetensors", "skimage", "matplotlib"}),
    ("model", MODEL, set()),
    ("export/precision", ("export", "calibration"), set()),
    ("benchmarks/training/serving", ("benchmarks", "training", "serving"), set()),
)
NUMPY_ONLY = {"numpy", "__future__"}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the most specific prefix matching ``module``."""
    best, length = None, -1
    for index, (_, prefixes, _) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to tests/test_layers.py")
    return best


def lazy_names(root: Path) -> dict[str, str]:
    """``banet``'s PEP 562 table: name -> defining module."""
    spec = importlib.util.spec_from_file_location("_banet_init", root / "banet" / "__init__.py")
    init = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(init)
    return dict(init._EXPORTS)


def module_files(root: Path) -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(module: str, path: Path, known: set[str], lazy: dict[str, str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in ``path``; internal names resolved to modules."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if base == "banet" and alias.name in lazy:
                    target = lazy[alias.name]
                found.append((target if target in known else base, node.lineno))
    return found


def check(root: Path) -> tuple[list[str], dict[str, set[str]]]:
    """Contract violations (one line each) and the internal import graph of the tree under ``root``."""
    files = module_files(root)
    lazy = lazy_names(root)
    known = set(files)
    problems, graph = [], {m: set() for m in files}
    for module, path in files.items():
        own = layer_of(module)
        name, _, banned = LAYERS[own]
        for target, line in imports_of(module, path, known, lazy):
            top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if top in PACKAGES:
                internal = next((m for m in sorted(known, key=len, reverse=True)
                                 if target == m or target.startswith(m + ".")), target)
                graph[module].add(internal)
                if layer_of(internal) > own:
                    problems.append(f"{where}: {module} ({name}) imports {internal} "
                                    f"({LAYERS[layer_of(internal)][0]}), a higher layer")
            elif banned is None and top not in NUMPY_ONLY and top not in sys.stdlib_module_names:
                problems.append(f"{where}: {module} (core) imports {top}; the core is numpy-only")
            elif banned and top in banned:
                problems.append(f"{where}: {module} ({name}) imports {top}, which that layer must not need")
    return problems, graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. import cycles."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_point_down_only():
    problems, _ = check(ROOT)
    assert not problems, "layer contract broken:\n" + "\n".join(problems)


def copy_packages(destination: Path) -> None:
    """The project's modules, copied under ``destination`` (to plant a wrong import in a copy)."""
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            target = destination / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())


def runtime_upward_imports(root: Path) -> list[str]:
    """Imports by ``runtime`` modules of anything above the runtime layer (model, export, calibration, serving,
    benchmarks, training), one line each."""
    files = module_files(root)
    known, lazy = set(files), lazy_names(root)
    runtime_layer = layer_of("runtime")
    return [f"{path.relative_to(root)}:{line}: {module} imports {target}"
            for module, path in files.items() if layer_of(module) == runtime_layer
            for target, line in imports_of(module, path, known, lazy)
            if target.split(".")[0] in PACKAGES and layer_of(target) > runtime_layer]


def test_the_runtime_imports_nothing_above_it():
    """What an app embeds stands alone: no module of ``runtime`` imports export, calibration, the model, serving,
    benchmarks or training (the layer order implies it; issue 31 names it as the acceptance rule)."""
    assert any(m.startswith("runtime.") for m in module_files(ROOT)), "no runtime modules found"
    assert runtime_upward_imports(ROOT) == []


@pytest.mark.parametrize("planted", ["def f():\n    from serving.client import DeblurClient\n",
                                     "import export.triton_repo\n", "from calibration import quantize\n"])
def test_a_runtime_import_from_above_is_named(tmp_path, planted):
    copy_packages(tmp_path)
    (tmp_path / "runtime" / "planted.py").write_text(planted)
    found = runtime_upward_imports(tmp_path)
    assert len(found) == 1 and found[0].startswith("runtime/planted.py:") and "runtime.planted imports" in found[0]


def test_serving_is_its_own_top_level_package():
    """The server, front, client, load test and Triton launcher live in ``serving``; ``runtime`` has none of them."""
    files = module_files(ROOT)
    for name in ("serve", "front", "client", "loadtest", "triton_server", "request_rules"):
        assert f"serving.{name}" in files and layer_of(f"serving.{name}") == len(LAYERS) - 1
    assert not [m for m in files if m.startswith("runtime.") and ("serve" in m or "triton" in m or
                                                                  m.endswith((".client", ".loadtest")))]


def test_no_import_cycles():
    _, graph = check(ROOT)
    assert cycles(graph) == []


@pytest.mark.parametrize("planted, expected", [
    ("def f():\n    from export.onnx_export import export_onnx\n", "runtime.planted (runtime) imports "
                                                                   "export.onnx_export (export/precision)"),
    ("import torch\n", "runtime.planted (runtime) imports torch"),
    ("def f():\n    from serving.loadtest import main\n", "runtime.planted (runtime) imports serving.loadtest "
                                                         "(benchmarks/training/serving)"),
])
def test_a_planted_wrong_import_is_caught(tmp_path, planted, expected):
    """Copy the tree, add one module that imports upward (even inside a function): the contract names it."""
    copy_packages(tmp_path)
    (tmp_path / "runtime" / "planted.py").write_text(planted)
    problems, _ = check(tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_planted_cycle_is_caught():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
