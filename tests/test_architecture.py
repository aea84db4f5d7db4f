"""The package's layout holds: the core never imports a folder, and no folder
reaches into another folder's private modules or names."""

from __future__ import annotations

import ast
from pathlib import Path

import ringbus

PACKAGE = Path(ringbus.__file__).resolve().parent
FOLDERS = ("sim", "journal", "transports", "viewer", "demo", "cli")


def imports_of(path: Path) -> list[str]:
    """Absolute dotted names of what ``path`` imports (``module.name`` for from-imports)."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(relative.parts[:-1])
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def folder_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "ringbus" and parts[1] in FOLDERS else None


def test_the_core_imports_no_folder() -> None:
    for path in modules():
        if path.parent != PACKAGE or path.name == "__main__.py":
            continue
        reaching = [name for name in imports_of(path) if folder_of(name)]
        assert not reaching, f"{path.name} imports {reaching}"


def test_no_folder_reaches_into_another_folders_private_names() -> None:
    for path in modules():
        own = path.relative_to(PACKAGE).parts[0]
        for name in imports_of(path):
            folder = folder_of(name)
            if folder is None or folder == own:
                continue
            private = [part for part in name.split(".")[2:] if part.startswith("_")]
            assert not private, f"{path.relative_to(PACKAGE)} imports {name}"


def test_only_the_command_line_parses_arguments() -> None:
    for path in modules():
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        assert "argparse" not in imports_of(path), path.relative_to(PACKAGE)


def test_the_readme_diagram_names_every_module() -> None:
    """The README's "Architecture" diagram matches the tree: every module is in it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Architecture") :]
    diagram = section[section.index("```") : section.index("```", section.index("```") + 3)]
    missing = [
        str(path.relative_to(PACKAGE))
        for path in modules()
        if path.stem != "__init__" and path.stem not in diagram
    ]
    assert missing == []
    for folder in FOLDERS:
        assert f"{folder}/" in diagram, folder
