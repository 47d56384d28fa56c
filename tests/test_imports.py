"""The layout's rules: common/ imports nothing from the model folders or experiments/, its modules
import each other without a cycle, and importing the figure code leaves matplotlib's backend alone."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"vanila_autoencoder", "variational_autoencoder", "experiments"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_common_imports_neither_model_folders_nor_experiments():
    files = sorted((ROOT / "common").glob("*.py"))
    assert len(files) > 10
    offenders = {f"{path.name}: {name}" for path in files for name in imported_modules(path)
                 if name.split(".")[0] in FORBIDDEN}
    assert not offenders


def runtime_imports(path: Path) -> set[str]:
    """The modules `path` imports when it runs: imports under `if TYPE_CHECKING:` left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and
               isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" for n in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "common":  # from common import latents
                names.update(f"common.{alias.name}" for alias in node.names)
    return names


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes (first = last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_common_has_no_import_cycle():
    graph = {f"common.{path.stem}": {name for name in runtime_imports(path) if name.startswith("common.")}
             for path in (ROOT / "common").glob("*.py")}
    assert find_cycle(graph) is None, find_cycle(graph)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom experiments import compare\n\ndef f():\n    import vanila_autoencoder.model\n")
    assert imported_modules(bad) == {"os", "experiments", "vanila_autoencoder.model"}


def test_importing_the_figure_code_keeps_the_matplotlib_backend(tmp_path):
    code = ("import matplotlib; before = matplotlib.get_backend(); "
            "import common.figures, common.model_figures; print(before, matplotlib.get_backend())")
    for backend in ("svg", "pdf"):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={"MPLBACKEND": backend, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                   "MPLCONFIGDIR": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [backend, backend]
