"""The engine's packages form layers, and nothing imports a layer above its own.

From the bottom: errors and wording, atomic writes and array reads, the datasets, the networks, the clustering primitives
(metrics, k-NN mining, K-means), the methods, the runs, the analysis of finished runs for the pages, then the
benchmarks, the command line and the package root. A module may import its own layer and any below it; every
import counts, including one inside a function. The check reads the source (``ast``) and imports nothing.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ROOT = "__init__"  # the package root, ``engine/__init__.py``
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "wording"),
    ("atomic", "npy"),
    ("data",),
    ("nn",),
    ("clustering",),
    ("methods",),
    ("runs",),
    ("analysis",),
    ("bench", "bench_features", "bench_pages"),
    ("cli_runs",),
    ("cli",),
    ("__main__", ROOT),
)
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}


def _module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement in ``module`` reads, one per imported name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{alias.name}" for alias in node.names]


def _layer(name: str, package: str, package_dir: Path) -> str | None:
    """The layer a name inside the package belongs to: its first part below the package (a sub-package or a
    module), or the root when that part names neither (``from engine import load_dataset``). None outside it."""
    parts = name.split(".")
    if parts[0] != package:
        return None
    if len(parts) == 1:
        return ROOT
    first = parts[1]
    if (package_dir / first).is_dir() or (package_dir / f"{first}.py").is_file():
        return first
    return ROOT


def back_edges(package_dir: Path) -> list[str]:
    """``file:line: STATEMENT (layer X) is above its own layer Y`` for every upward import under
    ``package_dir``, and a line for every module whose layer :data:`LAYERS` does not place."""
    package = package_dir.name
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        module = _module_name(path, package_dir)
        own = _layer(module, package, package_dir)
        where = path.relative_to(package_dir.parent)
        if own not in RANK:
            found.append(f"{where}: its layer {own!r} is not placed in LAYERS; add it where it belongs")
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _imported(node, module, is_package=path.name == "__init__.py")
            targets = {_layer(name, package, package_dir) for name in names}
            for target in sorted(targets - {None, own}, key=lambda t: RANK.get(t, len(LAYERS))):
                if RANK.get(target, len(LAYERS)) > RANK[own]:
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (layer {target}) is above its own "
                                 f"layer {own}")
    return found


def test_no_engine_module_imports_a_layer_above_its_own():
    assert back_edges(REPO / "engine") == []


def test_every_engine_package_and_module_has_a_layer():
    placed = {path.stem if path.is_file() else path.name for path in (REPO / "engine").iterdir()
              if (path.suffix == ".py" or (path / "__init__.py").is_file())}
    assert placed - {ROOT} == set(RANK) - {ROOT}


def test_the_check_reports_upward_imports_and_passes_downward_ones(tmp_path):
    package = tmp_path / "engine"
    files = {
        "__init__.py": "from .methods import get_method\n",
        "errors.py": "",
        "atomic.py": "from .errors import UserError\n",
        "clustering/__init__.py": "",
        "clustering/neighbors.py": "import numpy\n",
        "analysis/__init__.py": "",
        "analysis/results.py": "from ..runs import RunStore\nfrom ..clustering.neighbors import mine_neighbors\n",
        "runs/__init__.py": "from .store import RunStore\n",
        "runs/store.py": "from ..analysis.results import load_results\n",
        "methods/__init__.py": "from . import base\n",
        "methods/base.py": ("def fit():\n    from engine.analysis import results\n"
                            "    from engine import create_method\n"),
    }
    for name, source in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source)
    assert back_edges(package) == [
        "engine/methods/base.py:2: from engine.analysis import results (layer analysis) is above its own layer "
        "methods",
        "engine/methods/base.py:3: from engine import create_method (layer __init__) is above its own layer methods",
        "engine/runs/store.py:1: from ..analysis.results import load_results (layer analysis) is above its own "
        "layer runs",
    ]
