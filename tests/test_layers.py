"""The package's layering (issue: one house a learner can read): every import in ``helpers/`` read with ``ast``
(function-local ones too), checked against the layers below. A module imports only from layers under its own; inside
``infra/`` and ``course/`` (one part each) modules may import each other, but never in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parents[1] / "helpers"

# Bottom to top. A part is a module, or a whole subpackage ("infra", "course").
LAYERS: list[set[str]] = [
    {"infra"},                                                   # the floor: paths, runtime, quiet, hubio, outputs ...
    {"losses", "logprobs", "data", "quality", "worlds.toy"},     # math, text and a world that need nothing above
    {"bandit", "models", "worlds.splits"},                       # built on those: derivation, loading, sources
    {"evaluation", "judge", "worlds.toy_model"},                 # measuring a policy; judges; the toy reference
    {"scratch", "worlds.onpolicy", "llm_judge"},                 # DPO by hand; on-policy pairs; the optional LLM judge
    {"recipe"},                                                  # notebook 03's run
    {"sweep", "compare"},                                        # many runs; before vs after
    {"sweep_report"},                                            # what a sweep shows
    {"course"},                                                  # the machinery on top: runner, hub, CLI, export ...
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
MAX_LINES = 450
MAX_TOP_MODULES = 14


def _module_name(path: Path) -> str:
    rel = path.relative_to(HELPERS.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(HELPERS.rglob("*.py"))}


def _part(module: str) -> str:
    """``helpers.infra.runtime`` -> "infra", ``helpers.worlds.toy`` -> "worlds.toy", ``helpers.losses`` -> "losses"."""
    rest = module.split(".")[1:]
    if rest and rest[0] in ("infra", "course"):
        return rest[0]
    return ".".join(rest) or "helpers"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ``helpers`` modules that ``path`` imports (``from helpers.x import y`` names module ``helpers.x.y`` when
    that is a module, else ``helpers.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "helpers"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "helpers":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; write helpers.<module>")
    return found - {"helpers"}


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: imports_of(p, set(mods)) for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``) or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that do not go down a layer, each as ``"file -> file (part rank -> part rank)"``."""
    bad = []
    for m, deps in sorted(graph.items()):
        if m in ("helpers", "helpers.worlds"):  # the package maps: checked apart
            continue
        a = _part(m)
        for d in sorted(deps):
            b = _part(d)
            if a == b and a in ("infra", "course"):
                continue
            if RANK[b] >= RANK[a]:
                bad.append(f"{_file(m)} -> {_file(d)} ({a} on layer {RANK[a]} imports {b} on layer {RANK[b]})")
    return bad


def _file(module: str) -> str:
    return str(_modules()[module].relative_to(HELPERS.parent))


def test_every_module_has_a_layer():
    missing = sorted({_part(m) for m in _modules()} - set(RANK) - {"helpers", "worlds"})
    assert not missing, f"modules without a layer in tests/test_layers.py LAYERS: {missing}"


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(_file(m) for m in cycle)


def test_no_upward_import():
    bad = upward_imports(import_graph())
    assert not bad, "imports that run up (or across) the layers:\n" + "\n".join(bad)


def test_package_maps_import_only_the_floor():
    graph = import_graph()
    assert {_part(d) for d in graph["helpers"]} <= {"infra"}
    assert not graph["helpers.worlds"]


def test_the_checks_can_fail():
    """The checkers themselves, on made-up graphs: a circle is found and named, an upward import is reported."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = {"helpers.losses": {"helpers.recipe"}, "helpers.recipe": {"helpers.losses"},
             "helpers.infra.quiet": {"helpers.course.suite"}, "helpers.course.suite": {"helpers.infra.quiet"}}
    bad = upward_imports(graph)
    assert any("helpers/losses.py -> helpers/recipe.py" in b for b in bad)
    assert any("helpers/infra/quiet.py -> helpers/course/suite.py" in b for b in bad)
    assert not any(b.startswith("helpers/recipe.py") or b.startswith("helpers/course") for b in bad)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size(module):
    n = len(_modules()[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{_file(module)} has {n} lines (at most {MAX_LINES}): split it by concept"


def test_few_modules_at_the_top():
    """At most 14 modules (``.py`` files besides ``__init__.py``) directly under ``helpers/``; the three subpackages
    hold the rest."""
    top = [p.name for p in HELPERS.iterdir() if p.suffix == ".py" and p.name != "__init__.py"]
    assert len(top) <= MAX_TOP_MODULES, sorted(top)


def test_map_lists_every_top_module():
    """``helpers/__init__.py`` is the map a learner reads first: every module at the top and every subpackage."""
    doc = ast.get_docstring(ast.parse((HELPERS / "__init__.py").read_text()))
    names = [p.stem for p in HELPERS.glob("*.py") if p.stem != "__init__"]
    names += [f"{p.name}/" for p in HELPERS.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    missing = [n for n in names if not any(line.split()[:1] == [n] for line in doc.splitlines())]
    assert not missing, f"helpers/__init__.py's map does not list {missing}"
