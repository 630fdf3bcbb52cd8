"""Fingerprints of the code each component runs, for the pipeline cache.

TFX's cache key (``tfx/orchestration/portable/cache_utils.py``) covers the executor
spec, the input artifacts and the exec properties, and adds the content of a
``module_file`` only. We refer to our code by module path (``preprocessing_fn=
"trainer.transform.preprocessing_fn"``, ``run_fn=...``) and by executor class, and a
path does not change when the code behind it does: without more, an edited
``preprocessing_fn`` would leave Transform CACHED and ship the stale graph. So each
component that runs our code gets a ``code_fingerprint`` exec property: sha256 over
the module it loads plus everything of ours that module imports, transitively, plus
the package data files that code reads.

The import walk is static (``ast``), so it needs no TensorFlow and sees imports in
function bodies too (loaded lazily, but loaded when the function runs). A package's
``__init__.py`` runs whenever one of its submodules is imported: it is hashed, but only
its module-level imports are followed, since its functions (``components/__init__.py``'s
lazy ``__getattr__``) run only when asked for by name.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

# Our top-level packages; imports of anything else (TFX, TensorFlow, ...) are pinned
# by the lock file, not fingerprinted.
FIRST_PARTY = ("ingest", "components", "report", "serving", "trainer", "pipeline", "cli")

# Files that code of a package reads at run time, relative to the package directory.
PACKAGE_DATA: Mapping[str, tuple[str, ...]] = {"report": ("templates/*.html",)}

# The module each component loads, by node id. Components not listed run only TFX's code.
COMPONENT_CODE: Mapping[str, str] = {
    "ExampleGen": "components.example_gen.executor",
    "ExampleValidator": "components.data_validator.executor",
    "Transform": "trainer.transform",
    "Trainer": "trainer.task",
    "Pusher": "components.pusher.executor",
    "EvaluationReport": "components.evaluation_report.executor",
}

# The directory that holds the top-level packages (the source tree, or site-packages).
SOURCE_ROOT = Path(__file__).resolve().parent.parent

_DIGITS = 16


def _module_path(root: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``root``, or None if it is not one of ours."""
    if name.split(".")[0] not in FIRST_PARTY:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _import_nodes(tree: ast.AST, *, in_functions: bool) -> Iterable[ast.Import | ast.ImportFrom]:
    """Import statements of a module; those inside function bodies only if asked."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif in_functions or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(ast.iter_child_nodes(node))


def _imported_names(name: str, path: Path, *, in_functions: bool) -> set[str]:
    """Dotted names a module imports: ``import a.b`` gives a.b, ``from a import b``
    gives a and a.b (b may be a submodule or an attribute; the caller checks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_bytes(), filename=str(path))
    names: set[str] = set()
    for node in _import_nodes(tree, in_functions=in_functions):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            anchor = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{anchor}.{node.module}" if node.module else anchor
        else:
            base = node.module or ""
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def module_closure(module: str, root: Path = SOURCE_ROOT) -> list[Path]:
    """The files ``import module`` may run or read: the module, everything of ours it
    imports (transitively), the ``__init__.py`` of every package on the way, and the
    package data of those packages. Sorted, relative to ``root``."""
    if _module_path(root, module) is None:
        raise ValueError(f"module {module!r}: expected a module of ours under {root}")
    # Module name -> True once its function-level imports were followed too.
    seen: dict[str, bool] = {}
    pending: list[tuple[str, bool]] = [(module, True)]
    while pending:
        name, full = pending.pop()
        path = _module_path(root, name)
        if path is None or seen.get(name, False) or (name in seen and not full):
            continue
        seen[name] = full
        parts = name.split(".")
        # Importing a.b.c first runs a/__init__.py and a/b/__init__.py.
        pending.extend((".".join(parts[:i]), False) for i in range(1, len(parts)))
        pending.extend((n, True) for n in _imported_names(name, path, in_functions=full))
    files = {_module_path(root, name) for name in seen}
    for package, patterns in PACKAGE_DATA.items():
        if package in seen:
            for pattern in patterns:
                files.update(p for p in (root / package).glob(pattern) if p.is_file())
    return sorted(p.relative_to(root) for p in files if p is not None)


def fingerprint(module: str, root: Path = SOURCE_ROOT) -> str:
    """Short sha256 over the relative path and bytes of every file of ``module_closure``."""
    digest = hashlib.sha256()
    for relative in module_closure(module, root):
        data = (root / relative).read_bytes()
        for part in (relative.as_posix().encode(), data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()[:_DIGITS]


def component_fingerprints(root: Path = SOURCE_ROOT) -> dict[str, str]:
    """Node id -> fingerprint of the code it runs, for every entry of ``COMPONENT_CODE``."""
    return {component: fingerprint(module, root) for component, module in COMPONENT_CODE.items()}
