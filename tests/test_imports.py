"""The layout's rules: common/ imports nothing from the model folders or experiments/, and
importing the figure code leaves matplotlib's backend alone."""

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


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom experiments import compare\n\ndef f():\n    import vanila_autoencoder.model\n")
    assert imported_modules(bad) == {"os", "experiments", "vanila_autoencoder.model"}


def test_importing_the_figure_code_keeps_the_matplotlib_backend(tmp_path):
    code = ("import matplotlib; before = matplotlib.get_backend(); "
            "import common.figures, common.plotter; print(before, matplotlib.get_backend())")
    for backend in ("svg", "pdf"):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={"MPLBACKEND": backend, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                   "MPLCONFIGDIR": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [backend, backend]
