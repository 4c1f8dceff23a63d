"""The shape of the package: rlrun's modules import each other without circles, and only
downwards through the layers docs/architecture.md draws."""

import ast
import re
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "rlrun"
# Bottom to top: a module may import from its own layer and the layers below it.
LAYERS = [
    ("rlrun", "rlrun.config", "rlrun.protocols"),  # the typed settings, errors and the run/agent handshake
    ("rlrun.blocks",),  # networks, buffers, optimiser, normalisation, checkpoint state
    ("rlrun.envs",),  # environments: ids, construction, EnvPool, episodes, videos
    ("rlrun.loops",),  # the training loops an algorithm hands its parts to
    ("rlrun.algos",),  # one file per algorithm
    ("rlrun.core",),  # plan, run, checkpoints, resume, run folders, logging
    ("rlrun.report",),  # statistics across runs
    ("rlrun.commands",),  # what a user types: train, evaluate, export, report, sweep
    ("rlrun.cli",),  # routing only
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The index of the most specific LAYERS entry `module` belongs to."""
    best, best_length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def import_graph() -> nx.DiGraph:
    """Every import of an rlrun module by an rlrun module, inside functions too."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            # `from rlrun.blocks import state` imports the module rlrun.blocks.state.
            found = next((t for t in targets if t in modules), None)
            if found is not None and found != name:
                graph.add_edge(name, found)
    return graph


def test_the_layers_cover_every_module():
    assert [m for m in import_graph() if layer(m) is None] == []


def test_no_import_circle():
    circles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert circles == []


def test_imports_point_down_the_layers():
    upward = [(a, b) for a, b in import_graph().edges if layer(a) < layer(b) and not (a == "rlrun" or b == "rlrun")]
    assert upward == []


def test_imports_inside_functions_say_why():
    """An rlrun module imported inside a function is there for a reason the line states (a
    heavy optional extra), not to dodge a circle."""
    unexplained = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s+(from|import) rlrun\b", line) and "#" not in line:
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert unexplained == []


def test_the_architecture_page_names_every_module():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and str(path.relative_to(PACKAGE.parent)) not in page
    ]
    assert missing == []
