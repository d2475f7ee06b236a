"""The import graph of ``src/scanlearn`` follows docs/architecture.md, and its layout list names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "scanlearn"
# The package front imports the estimator on first use (PEP 562), and the command line's machinery only once
# ``scanlearn.main`` has parsed the flags, so ``scanlearn --help`` answers without importing torch.
LAZY_IMPORTS = {("scanlearn", "scanlearn.api"), ("scanlearn", "scanlearn.cli")}
STAGE_IMPORTS = {("scanlearn.stages.predict", "scanlearn.stages.prepare")}  # docs/architecture.md: the one stage-to-stage import


def module_name(path: Path) -> str:
    """Dotted name of a source file (a package's ``__init__`` is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, bool]]:
    """``(module, inside a function)`` for every scanlearn module ``path`` imports (``from x import sub`` counts sub)."""
    name, is_package = module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if node is not fn}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            module = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module
            targets = [f"{module}.{alias.name}" if (PACKAGE.parent / module.replace(".", "/") / alias.name).with_suffix(".py").is_file()
                       or (PACKAGE.parent / module.replace(".", "/") / alias.name).is_dir() else module for alias in node.names]
        else:
            continue
        found += [(target, id(node) in nested) for target in targets if target.split(".")[0] == "scanlearn"]
    return found


def graph() -> dict[str, set[str]]:
    """Module -> scanlearn modules it imports, for every source file."""
    return {module_name(p): {m for m, _ in imported_modules(p)} for p in PACKAGE.rglob("*.py")}


def part(module: str) -> str:
    """The part of the architecture table a module belongs to: its first name below ``scanlearn``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "scanlearn"


def allowed_table() -> dict[str, set[str]]:
    """Part -> parts it may import, read from the table in docs/architecture.md."""
    table = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        allowed = set() if cells[2] == "—" else {a.strip() for a in cells[2].split(",")}
        for name in re.findall(r"`(\w+)`", cells[0]):
            table[name] = allowed
    return table


def test_every_import_is_allowed_by_the_architecture_table():
    table = allowed_table()
    modules = graph()
    assert {part(m) for m in modules} <= set(table), "every part of the package has a row in docs/architecture.md"
    wrong = sorted(f"{m} imports {t}" for m, targets in modules.items() for t in targets
                   if part(t) != part(m) and part(t) not in table[part(m)])
    assert wrong == []


def stage_to_stage(modules: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import of one stage module by another (the ``stages`` package itself is not a stage)."""
    stages = {m for m in modules if m.startswith("scanlearn.stages.")}
    return sorted((m, t) for m in stages for t in modules[m] if t in stages and t != m)


def test_no_stage_imports_another_stage():
    assert [pair for pair in stage_to_stage(graph()) if pair not in STAGE_IMPORTS] == []


def find_cycles(modules: dict[str, set[str]]) -> list[str]:
    """Every import cycle met by a depth-first walk, as ``a -> b -> a``."""
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(modules.get(module, ())):
            if target == module or target not in modules:
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles_between_modules():
    assert find_cycles(graph()) == []


def test_no_imports_hidden_inside_functions():
    hidden = sorted((module_name(p), m) for p in PACKAGE.rglob("*.py") for m, inner in imported_modules(p) if inner)
    assert [pair for pair in hidden if pair not in LAZY_IMPORTS] == []


def layout_list() -> set[str]:
    """Module paths (relative to src/scanlearn) listed in docs/architecture.md's layout block: lines start with module
    names (``x.py``, several allowed) or a package (``pkg/``); two spaces of indent per package level."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed, stack = set(), []
    for line in block.splitlines()[2:]:
        words = line.split()
        if not words or not (words[0].endswith("/") or words[0].endswith(".py")):
            continue
        stack = stack[: (len(line) - len(line.lstrip())) // 2 - 1]
        if words[0].endswith("/"):
            stack.append(words[0].rstrip("/"))
            continue
        for word in words:
            if not word.endswith(".py"):
                break
            listed.add("/".join(stack + [word]))
    return listed


def test_layout_list_names_exactly_the_modules():
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    listed = layout_list()
    assert sorted(listed - actual) == [], "listed in docs/architecture.md but missing"
    assert sorted(actual - listed) == [], "modules the layout list leaves out"


def test_the_checks_see_real_imports_and_cycles():
    modules = graph()
    assert "scanlearn.engine.training" in modules["scanlearn.stages.scan"]
    assert "scanlearn.engine.distributed" in modules["scanlearn.stages.scan"], "``from ..engine import distributed`` counts"
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert "engine" not in allowed_table()["data"]
    assert stage_to_stage({"scanlearn.stages.a": {"scanlearn.stages.b", "scanlearn.engine"}, "scanlearn.stages.b": set()}) \
        == [("scanlearn.stages.a", "scanlearn.stages.b")]
