"""The docs point at things that exist: the README's guarantees at tests, ARCHITECTURE.md at modules."""
from __future__ import annotations

import ast
import importlib
import re

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text()
ARCHITECTURE = (REPO / "docs" / "ARCHITECTURE.md").read_text()


def guarantee_references() -> list[tuple[str, str]]:
    """(test file, test name) for every ``tests/...py::name`` and following ``::name`` in the guarantees table."""
    table = README.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    refs = []
    for row in table.splitlines():
        current = None
        for file, name in re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`", row):
            current = file or current
            refs.append((current, name))
        refs += [(file, "") for file in re.findall(r"`(tests/[\w/]+\.py)`", row)]
    return refs


def test_the_guarantees_table_names_tests_that_exist() -> None:
    refs = guarantee_references()
    assert len(refs) > 20
    for file, name in refs:
        path = REPO / file
        assert path.is_file(), file
        if name:
            defined = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
            assert name in defined, f"{file}::{name}"


@pytest.mark.parametrize("name", sorted(set(re.findall(r"`(medseg(?:\.\w+)+)", ARCHITECTURE))))
def test_architecture_names_modules_and_objects_that_exist(name: str) -> None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{name} is not importable")


def test_architecture_lists_every_package() -> None:
    packages = sorted(p.name for p in (REPO / "stages" / "medseg").iterdir() if (p / "__init__.py").is_file())
    for package in packages:
        assert f"`{package}`" in ARCHITECTURE or f"medseg.{package}" in ARCHITECTURE, package
