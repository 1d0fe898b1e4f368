"""Which of the package's modules a stage runs: its import closure, read from the source.

DVC re-runs a stage when one of its ``deps`` changes, so a stage's dependencies must be
every module whose code it executes, not only its own file. The closure follows every
``medjson`` import, including those inside functions (they run too), and nothing else:
third-party packages are pinned by ``requirements.txt``. Two uses read it:
- a training run's identity includes a digest of its closure, so a checkpoint written by
  other code is never resumed;
- a test holds each stage's ``deps`` in ``dvc.yaml`` equal to its closure, with a whole
  subpackage folder standing for its modules where the stage runs all of them
  (``python -m medjson.training.closure medjson.<stage>`` prints the list).
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "medjson"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_path(module: str) -> Path:
    """The file of a package module: ``medjson.core.prompts`` -> ``core/prompts.py``; a subpackage is its
    ``__init__.py``."""
    relative = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    return relative / "__init__.py" if relative.is_dir() else relative.with_suffix(".py")


def _packages_of(module: str) -> list[str]:
    """The packages Python runs before ``module``: ``medjson.core.prompts`` -> medjson, medjson.core."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@lru_cache(maxsize=None)
def direct_imports(module: str) -> frozenset[str]:
    """The package modules ``module`` imports anywhere in its source."""
    tree = ast.parse(module_path(module).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from medjson.core import x` may name a module; `from medjson.core.x import y` names x.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name.startswith(f"{PACKAGE}.") and module_path(name).exists())
    return frozenset(found)


def import_closure(module: str) -> list[str]:
    """``module`` and every package module it reaches through imports, with the ``__init__`` of every
    package on the way (Python runs them first), sorted."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend((set(direct_imports(current)) | set(_packages_of(current))) - seen)
    return sorted(seen)


def closure_files(module: str) -> list[str]:
    """The closure as paths relative to the project root (``src/medjson/core/prompts.py``), as dvc.yaml names them."""
    root = PACKAGE_DIR.parents[1]
    return sorted(module_path(m).relative_to(root).as_posix() for m in import_closure(module))


def package_files(folder: str) -> list[str]:
    """Every module file of a package folder (``src/medjson/core``), subpackages included, as closure_files names them."""
    root = PACKAGE_DIR.parents[1]
    return sorted(path.relative_to(root).as_posix() for path in (root / folder).rglob("*.py"))


def closure_deps(module: str) -> list[str]:
    """The closure as dvc.yaml lists it: a subpackage folder where the stage runs every module in it,
    single files elsewhere. A folder the stage runs only part of is never listed whole, so an edit
    to a module the stage does not run (a reward, for SFT) never re-runs it."""
    files = closure_files(module)
    root = PACKAGE_DIR.parents[1]
    folders = sorted(
        folder.relative_to(root).as_posix() for folder in PACKAGE_DIR.iterdir() if (folder / "__init__.py").is_file()
    )
    whole = [f for f in folders if set(package_files(f)) <= set(files)]
    return sorted(whole + [f for f in files if not any(f.startswith(w + "/") for w in whole)])


def code_digest(module: str) -> str:
    """sha256 over the source of ``module``'s closure: changes whenever any code the stage runs changes."""
    digest = hashlib.sha256()
    for name in import_closure(module):
        digest.update(name.encode() + b"\0" + module_path(name).read_bytes() + b"\0")
    return digest.hexdigest()


def main() -> None:
    for module in sys.argv[1:] or ["medjson.stages.prepare"]:
        print(f"{module}:")
        for path in closure_deps(module):
            print(f"  - {path}")


if __name__ == "__main__":
    main()
