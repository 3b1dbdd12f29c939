"""Imports run one way: the model library never reaches up into bench or infer, and no two modules import each other."""

import ast
from pathlib import Path

import mambaout

SRC = Path(mambaout.__file__).parent


def imports_of(package: str) -> dict[str, set[str]]:
    """Every `mambaout.*` module each module of `package` imports, at the top or inside a function."""
    graph = {}
    for path in sorted((SRC / package).glob("*.py")):
        name = f"mambaout.{package}.{path.stem}".removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mambaout."):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("mambaout.")}
        graph[name] = found
    return graph


def test_models_reach_bench_only_from_their_cli_and_never_infer():
    graph = imports_of("models")
    assert len(graph) == 6
    upward = {
        m: sorted(i for i in deps if i.startswith(("mambaout.bench", "mambaout.infer"))) for m, deps in graph.items()
    }
    assert {m: deps for m, deps in upward.items() if deps} == {"mambaout.models.cli": ["mambaout.bench.cost"]}


def test_no_import_cycles_in_models_bench_and_infer():
    graph = {**imports_of("models"), **imports_of("bench"), **imports_of("infer")}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for dep in graph.get(start, ()):
            if dep == target or (dep not in seen and reaches(dep, target, seen | {dep})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, {m})] == []
    assert graph["mambaout.bench.cost"] == set()  # counting needs no model switch
