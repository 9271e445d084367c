"""The package's import layers: a module imports only from its own layer or lower ones, so there
is no circle and the schema stays the leaf."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snnrsa"
# lowest first; a top-level module or package of snnrsa -> its layer
LAYERS = [
    {"schema", "rsa", "runtime"},
    {"data", "brain", "store", "plots"},
    {"neurons"},
    {"model"},
    {"rules"},
    {"run"},
    {"config"},
    {"cli", "summarize", "__main__", "__init__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def top(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("snnrsa"):
            found += ([f"snnrsa.{a.name}" for a in node.names] if node.module == "snnrsa"
                      else [node.module])
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_name_has_a_layer() -> None:
    names = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in SOURCES}
    assert names <= set(LAYER), names - set(LAYER)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path: Path) -> None:
    own = LAYER[path.relative_to(PACKAGE).parts[0].removesuffix(".py")]
    higher = [m for m in imports(path) if LAYER[top(m)] > own]
    assert not higher, f"{path.name} (layer {own}) imports {higher}"
