"""The package's shape: imports inside exporter/ run one way, and no module reaches into another's private names.

Every import counts, the lazy ones inside functions too: a lazy import still makes two modules
depend on each other, only later. The wheel's package list is checked against the folders.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    """{dotted name: file} for exporter/ and architectures/ (installed as exporter.architectures)."""
    found = {}
    for folder, package in ((REPO / "exporter", "exporter"), (REPO / "architectures", "exporter.architectures")):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every exporter import in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, [], node.lineno) if sub in known else (base, [alias.name], node.lineno))
    return [(target, names, line) for target, names, line in out if target.split(".")[0] == "exporter"]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _, _ in imports(name, path, known):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            # a package's own __init__ is where its modules live, not a dependency between peers
            if target in known and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_exporter():
    edges = graph()
    assert sum(len(v) for v in edges.values()) > 200  # the graph was read, not an empty walk
    found = cycles(edges)
    assert not found, "import cycles inside exporter/: " + "; ".join(" <-> ".join(group) for group in found)


def test_no_private_name_is_imported_across_modules():
    known = modules()
    crossing = [
        f"{path.relative_to(REPO)}:{line} imports {target}.{n}"
        for name, path in known.items()
        for target, names, line in imports(name, path, known)
        for n in names
        if n.startswith("_") and not n.endswith("__") and target != name
    ]
    assert not crossing, crossing


# The ONNX family is the intermediate every ONNX-sourced row reads (exporter.pipeline.onnx_source) and what
# the int8 rescue works on (exporter/rescue/): shared code may use it; every other target stays in its folder.
SHARED_TARGETS = {"onnx"}


def target_names() -> set[str]:
    """Every name a target goes by: row names, artifact kinds, verbs and Format names (precisions are rules, not targets)."""
    from exporter import kinds

    names = {n for row in kinds.KINDS for n in (row.name, row.kind, row.verb, row.format.name)}
    return names - {"int8", "fp16", "fp32", "quantize"}


def target_comparisons(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) where code compares something with a target's name: an if-chain the rows should decide."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [(node.lineno, v.value) for v in values if isinstance(v, ast.Constant) and v.value in names]
    return found


def test_the_comparison_finder_sees_an_if_chain():
    tree = ast.parse('if kind == "coreml" or row.name in ("tensorrt", "x"):\n    pass\nif precision == "int8":\n    pass\n')
    assert target_comparisons(tree, {"coreml", "tensorrt"}) == [(1, "coreml"), (1, "tensorrt")]


def test_no_target_code_outside_its_folder():
    """Outside exporter/targets/: no target's backend is imported, no target's name decides a branch, and no target
    folder but the shared ONNX family is imported (the rows, their Formats and hooks carry what differs)."""
    from exporter import kinds

    shared = set(kinds.REFERENCE_PACKAGES) | {"onnx", "onnxruntime", "onnxscript"}
    backends = {p for row in kinds.KINDS for p in row.packages} - shared
    assert {"coremltools", "tensorrt", "openvino", "executorch"} <= backends
    names = target_names() - {f"exporter.targets.{t}" for t in SHARED_TARGETS} - SHARED_TARGETS
    outside = []
    for name, path in modules().items():
        if name.startswith("exporter.targets.") or name.startswith("exporter.architectures"):
            continue
        if name == "exporter.hook_types":  # written from the rows for mypy; imports only under TYPE_CHECKING
            continue
        tree = ast.parse(path.read_text())
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            module = (
                node.names[0].name if isinstance(node, ast.Import) else node.module if isinstance(node, ast.ImportFrom) else None
            )
            if module and module.split(".")[0] in backends:
                outside.append(f"{where}:{node.lineno} imports {module}")
            if module and module.startswith("exporter.targets.") and module.split(".")[2] not in SHARED_TARGETS:
                outside.append(f"{where}:{node.lineno} imports {module}")
        if not name.startswith(("exporter.loading", "exporter.sources")):  # checkpoint forms: a TorchScript *input*
            outside += [f"{where}:{line} compares with {value!r}" for line, value in target_comparisons(tree, names)]
    assert not outside, "target code outside exporter/targets/:\n" + "\n".join(outside)


def task_branches(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) where code compares with a task's name or keys a table by one: what the task should answer."""
    found = target_comparisons(tree, names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            found += [(node.lineno, k.value) for k in node.keys if isinstance(k, ast.Constant) and k.value in names]
    return found


def test_the_task_finder_sees_a_branch_and_a_table():
    tree = ast.parse('what = {"segment": "maps"}.get(task)\nif task != "detect":\n    pass\nx = "segment"\n')
    assert sorted(task_branches(tree, {"segment", "detect"})) == [(1, "segment"), (2, "detect")]


# a source says which task its checkpoints are for (Ultralytics: detect or classify; a registry entry's task)
TASK_NAMERS = ("exporter.tasks", "exporter.sources", "exporter.loading")
NOT_A_TASK = {("exporter.hooks", "detect")}  # a Format's detect hook: it recognises files


def test_no_task_is_named_outside_tasks():
    """verify, reports, eval, debug, the targets and the CLI ask an output's task (exporter/tasks/) what it means."""
    from exporter import tasks

    names = set(tasks.NAMES)
    outside = [
        f"{path.relative_to(REPO)}:{line} branches on the task {value!r}"
        for name, path in modules().items()
        if not name.startswith(TASK_NAMERS) and not name.startswith("exporter.architectures")
        for line, value in task_branches(ast.parse(path.read_text()), names)
        if (name, value) not in NOT_A_TASK
    ]
    assert not outside, "task code outside exporter/tasks/:\n" + "\n".join(outside)


def test_a_row_module_imported_first_still_registers_every_row():
    """A row module imports exporter.rows, not the table: imported first (a plug-in's test, a user script) it must not
    meet itself half-initialised while the table loads every folder (a circular import broke whole pytest workers)."""
    import subprocess
    import sys

    firsts = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "exporter" / "targets").glob("*/row.py")
    ) + ["exporter.targets.onnx.verb", "exporter.rows", "exporter.hooks"]
    assert len(firsts) >= 9
    for first in firsts:
        probe = f"import {first}\nfrom exporter import kinds\nprint(len(kinds.KINDS))"
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0, f"import {first} first: {done.stderr.strip().splitlines()[-1:]}"
        assert int(done.stdout) >= 13, first


def test_the_wheel_lists_every_package():
    """A package folder missing from pyproject's list is absent from the wheel (and an import error there)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {
        "exporter." + ".".join(p.parent.relative_to(REPO / "exporter").parts) if p.parent != REPO / "exporter" else "exporter"
        for p in (REPO / "exporter").rglob("__init__.py")
    }
    assert folders | set(config["package-dir"]) == listed
    assert config["package-dir"] == {"exporter.architectures": "architectures", "exporter.recipes": "recipes"}
    assert "*.yaml" in config["package-data"]["exporter.recipes"]


def test_shipped_recipes_are_read_as_package_data():
    from importlib.resources import files

    from exporter import recipe

    names = {p.name for p in files("exporter.recipes").iterdir() if p.name.endswith(".yaml")}
    assert names == {f"{n}.yaml" for n in recipe.shipped()} and {"release.yaml", "demo.yaml"} <= names


# ----------------------------------------------------------------- short functions

LONGEST_FUNCTION = 80  # lines, its def and docstring included: more is several steps that want names


def long_functions(source: str, limit: int = LONGEST_FUNCTION) -> list[tuple[int, str, int]]:
    """(line, name, length) of each function over ``limit`` lines; a nested one also counts inside its parent."""
    return sorted(
        (node.lineno, node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    )


def test_the_checker_finds_a_long_function():
    def body(lines: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(lines))

    source = (
        "def fits():\n"
        + body(79, "    ")  # lines 1-80: exactly the limit
        + "def too_long():\n"
        + body(80, "    ")  # lines 81-161
        + "class C:\n    async def method(self):\n        def inner():\n"
        + body(81, " " * 12)  # 162-245
    )
    assert long_functions(source) == [(81, "too_long", 81), (163, "method", 83), (164, "inner", 82)]
    assert long_functions("def f():\n    return 1\n") == []


def test_no_function_in_the_library_is_over_80_lines():
    """Every function of exporter/ fits a screen; a longer one is split into named helpers in its module."""
    paths = sorted((REPO / "exporter").rglob("*.py"))
    assert len(paths) > 100  # the package was read, not an empty walk
    too_long = [
        f"{path.relative_to(REPO)}:{line} {name} {length} lines"
        for path in paths
        for line, name, length in long_functions(path.read_text())
    ]
    assert not too_long, "functions over 80 lines:\n" + "\n".join(too_long)
