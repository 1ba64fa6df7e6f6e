import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_script(relative: str):
    """Import a script of experiments/ (not a package) as a module."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def paper_rows():
    return load_script("experiments/paper/rows.py")


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # The configs name each other by repository-relative paths; pytest's own argv must not reach the CLI.
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("sys.argv", ["clsvit"])
