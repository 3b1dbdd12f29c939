"""Imports run one way: every package of mambaout sits in a tier and imports only from the tiers below it.

Counted are all `mambaout` imports of every module, at the top and inside functions (an AST walk, not what happens
to be imported at run time). A module may import from its own package or from a lower tier, never from a higher
tier or sideways from another package of its own tier; no two modules import each other, directly or round a
circle (a type-only import under `if TYPE_CHECKING:` never runs and closes none); and no module imports another
module's private (underscore) names.
"""

import ast
from pathlib import Path

import mambaout

SRC = Path(mambaout.__file__).parent

# Bottom first. A package imports only from the tiers before its own. The table is the README's "Layout". What knows
# no model (measuring, data in, the training engine) sits under the model stack (scan, mixers, models), which sits
# under the pipelines that train and use models.
TIERS = [
    {"errors", "measure"},  # what a user did wrong; counting, weighing and timing a model
    {"data", "video"},  # images and video in
    {"engine"},  # runtime, training step, epochs, checkpoints, records, config-driven command lines
    {"ssm"},  # the selective scan
    {"mixers"},  # token mixers: local conv, SSM, attention
    {"models"},  # the MambaOut family, its fused inference blocks, the 1-D sequence model
    {"train", "dense", "anomaly"},  # the pipelines: classification, detection/segmentation, line video
    {"study"},  # "is the SSM worth it?" over tasks of every pipeline
    {"infer"},  # classify images, the fast inference path
    {"export"},  # ONNX / OpenVINO
    {"bench"},  # speed of models and engines side by side
    {"monitor"},  # `mambaout watch` on the line: live page, MQTT, webhook, evidence
    {"mambaout"},  # the package's own namespace (`mambaout.create_model`, `__version__`)
    {"cli"},  # the `mambaout` command
    {"__main__"},  # `python -m mambaout`
]


def _module_name(path: Path) -> str:
    return ".".join(("mambaout", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module an imported name lives in: `mambaout.models.fuse` for `from mambaout.models import fuse`."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements under `if TYPE_CHECKING:`: read by type checkers, never run."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }


def imports(run_time_only: bool = False) -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, imported name or None)} for every `mambaout` import anywhere in the module
    (with `run_time_only`, without those under `if TYPE_CHECKING:`)."""
    graph: dict[str, set[tuple[str, str | None]]] = {}
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree) if run_time_only else set()
        for node in ast.walk(tree):
            if node in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                if base == "mambaout" or base.startswith("mambaout."):
                    for alias in node.names:
                        full = f"{base}.{alias.name}"
                        found.add((full, None) if full in MODULES else (base, alias.name))
            elif isinstance(node, ast.Import):
                found |= {(a.name, None) for a in node.names if a.name.split(".")[0] == "mambaout"}
        graph[module] = {(_resolve(target), name) for target, name in found}
    return graph


def package_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "mambaout"


def tier_of(module: str) -> int:
    return next(i for i, tier in enumerate(TIERS) if package_of(module) in tier)


def test_every_package_has_a_tier_and_every_tier_entry_exists():
    packages = {package_of(m) for m in MODULES}
    assert packages == set().union(*TIERS)
    assert sum(len(t) for t in TIERS) == len(packages)  # each package in one tier only


def test_no_import_runs_up_or_sideways():
    wrong = sorted(
        (module, target)
        for module, targets in imports().items()
        for target, _ in targets
        if package_of(target) != package_of(module) and tier_of(target) >= tier_of(module)
    )
    assert wrong == []


def test_no_module_imports_another_modules_private_names():
    private = sorted(
        (module, f"{target}.{name}")
        for module, targets in imports().items()
        for target, name in targets
        if name and name.startswith("_") and not name.endswith("__") and target != module
    )
    assert private == []


def test_no_import_cycles_between_modules():
    """A type-only import (under `if TYPE_CHECKING:`) never runs, so it closes no circle; it still counts for the
    direction above."""
    graph = {m: {t for t, _ in targets if t != m} for m, targets in imports(run_time_only=True).items()}
    # Tarjan's strongly connected components: a component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for t in graph[m]:
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while not component or component[-1] != m:
                component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert circles == []


def test_measuring_needs_nothing_else_of_the_package():
    """Counting, weighing and timing import no model, so every command can use them."""
    assert {
        t for m, ts in imports().items() if package_of(m) == "measure" for t, _ in ts if package_of(t) != "measure"
    } == set()
