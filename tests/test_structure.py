"""The shape of the code: each generation of containerd is one folder (recover/generations/<name>/),
and the shared core (every other module) imports none of them: it asks the registry
(recover/generations/__init__.py), which loads a generation's plug-in only when asked."""

from __future__ import annotations

import ast
from pathlib import Path

import recover

PACKAGE = Path(recover.__file__).parent
GENERATIONS = PACKAGE / "generations"
MAX_LINES = 610  # "no module over ~600 lines"


def imported(path: Path) -> set[str]:
    """The modules a file imports, absolute (recover.x.y), relative ones resolved."""
    package = ".".join(("recover", *path.relative_to(PACKAGE).parent.parts))
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def test_the_core_imports_no_generation():
    plugins = {f"recover.generations.{d.name}" for d in GENERATIONS.iterdir() if (d / "__init__.py").exists()}
    assert plugins == {"recover.generations.containerd_0_2", "recover.generations.runtime_v2"}
    core = [p for p in PACKAGE.rglob("*.py") if GENERATIONS not in p.parents]
    assert len(core) > 20
    for path in core:
        reached = {m for m in imported(path) for plugin in plugins if m == plugin or m.startswith(plugin + ".")}
        assert not reached, f"{path.relative_to(PACKAGE)} imports {sorted(reached)}"


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if "cri_v1" not in p.parts and "proto" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_package_is_installed():
    """pyproject names its packages (a find would walk the fixtures' link loops): each dir of the
    tree that is a package must be named, or an installed recover lacks it (a missing recover.cli
    once made every installed command fail)."""
    import tomllib

    checkout = Path(__file__).resolve().parent.parent
    named = set(tomllib.loads((checkout / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(checkout).parts) for p in (checkout / "recover").rglob("__init__.py")}
    assert found == named
    # and the recover under test (installed, CI's is no editable one) holds every one of them
    installed = Path(recover.__file__).parent
    assert all((installed.parent.joinpath(*name.split(".")) / "__init__.py").is_file() for name in named)
