"""Which of the package's modules a stage runs: its import closure, read from the source.

DVC re-runs a stage when one of its ``deps`` changes, so a stage's dependencies must be
every module whose code it executes, not only its own file. The closure follows every
``medjson`` import, including those inside functions (they run too), and nothing else:
third-party packages are pinned by ``requirements.txt``. Two uses read it:
- a training run's identity includes a digest of its closure, so a checkpoint written by
  other code is never resumed;
- a test holds each stage's ``deps`` in ``dvc.yaml`` equal to its closure
  (``python -m medjson.closure`` prints them).
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "medjson"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_path(module: str) -> Path:
    if module == PACKAGE:
        return PACKAGE_DIR / "__init__.py"
    return PACKAGE_DIR / (module.removeprefix(f"{PACKAGE}.").replace(".", "/") + ".py")


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
            # `from medjson import x` may name a module; `from medjson.x import y` names x.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name.startswith(f"{PACKAGE}.") and module_path(name).exists())
    return frozenset(found)


def import_closure(module: str) -> list[str]:
    """``module`` and every package module it reaches through imports (the package's own
    ``__init__`` included: it runs first), sorted."""
    seen, todo = set(), [PACKAGE, module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(direct_imports(current) - seen)
    return sorted(seen)


def closure_files(module: str) -> list[str]:
    """The closure as paths relative to the project root (``src/medjson/x.py``), as dvc.yaml names them."""
    root = PACKAGE_DIR.parents[1]
    return [module_path(m).relative_to(root).as_posix() for m in import_closure(module)]


def code_digest(module: str) -> str:
    """sha256 over the source of ``module``'s closure: changes whenever any code the stage runs changes."""
    digest = hashlib.sha256()
    for name in import_closure(module):
        digest.update(name.encode() + b"\0" + module_path(name).read_bytes() + b"\0")
    return digest.hexdigest()


def main() -> None:
    for module in sys.argv[1:] or ["medjson.prepare"]:
        print(f"{module}:")
        for path in closure_files(module):
            print(f"  - {path}")


if __name__ == "__main__":
    main()
