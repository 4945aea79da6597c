"""What the code imports is what pyproject.toml declares, with bounds."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

pytestmark = pytest.mark.datasets_independent("imports against pyproject.toml")

REPO = Path(__file__).resolve().parents[1]
LOCAL = {"openeds", "preprocessing", "openeds_precomputed", "push", "tests", "benchmarks", "examples"}
SOURCES = ["openeds", "preprocessing", "tests", "benchmarks", "examples", "push.py", "openeds_precomputed.py"]


def _imported_modules() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in the repo's code -> the files importing them."""
    found: dict[str, set[str]] = {}
    for source in SOURCES:
        path = REPO / source
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(file.relative_to(REPO).as_posix())
    return found


def _declared() -> dict[str, str]:
    """Normalised distribution name -> its requirement string, over dependencies and every extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    return {_normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]): r for r in requirements}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared_with_bounds():
    declared = _declared()
    distributions = packages_distributions()
    missing = []
    for module, files in sorted(_imported_modules().items()):
        if module in sys.stdlib_module_names or module in LOCAL or module == "__future__":
            continue
        dists = [_normalise(d) for d in distributions.get(module, [module])]
        if not any(d in declared for d in dists):
            missing.append(f"{module} ({', '.join(dists)}) imported by {', '.join(sorted(files))}")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)
    unbounded = [r for r in declared.values() if "<" not in r and "==" not in r]
    assert not unbounded, f"requirements without an upper bound: {unbounded}"


def test_requires_python_is_what_the_code_needs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # kaggle>=2.2 and datetime.UTC need 3.11
    assert sys.version_info >= (3, 11)


def test_every_package_is_shipped():
    """setuptools ships only the packages pyproject.toml lists, subpackages included: a folder with an
    `__init__.py` left out of the list would be missing from an installed copy."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        init.parent.relative_to(REPO).as_posix().replace("/", ".")
        for top in ("openeds", "preprocessing")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found <= listed, f"packages not listed in [tool.setuptools] packages: {sorted(found - listed)}"
