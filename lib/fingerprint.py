"""Code fingerprints: which source a result was computed by, so that an edit to it never serves an old result silently.

The fingerprint of an experiment function ``fn`` (in ``lib.experiments.<chapter>``) hashes

* the top-level definitions of ``fn``'s own module that ``fn`` reaches by name (its helpers, constants, classes),
  but not the chapter's figure functions, and
* every other ``lib`` module those definitions use (models, layers, the trainer, data loading, metrics...), whole,
  together with the ``lib`` modules *they* import,

each as a normalised syntax tree: comments, docstrings, blank lines and formatting do not count; any change to what
runs does. Presentation and plumbing modules (:data:`NEUTRAL`: figures, widgets, claims tables, the store, the runner)
never count, so editing a plot or the prose keeps hours of committed results valid.

The tree is serialised by hand (node names, field values; empty and missing fields skipped) rather than with
``ast.dump``, whose output changes between Python versions: a GPU machine's Python must stamp the same fingerprint.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

# modules whose edits never change a computed number
NEUTRAL = frozenset({"lib.plotting", "lib.widgets", "lib.claims", "lib.results", "lib.reproduce", "lib.launchers",
                     "lib.fingerprint", "lib.paths", "lib.experiments"})


def _serialise(node) -> str:
    if isinstance(node, ast.AST):
        parts = []
        for name in sorted(node._fields):
            if name in ("ctx", "type_comment", "kind"):  # load/store context and u"" markers do not change behaviour
                continue
            value = getattr(node, name, None)
            if value is None or value == []:
                continue
            parts.append(f"{name}={_serialise(value)}")
        return f"{type(node).__name__}({','.join(parts)})"
    if isinstance(node, list):
        return "[" + ",".join(_serialise(v) for v in node) + "]"
    return repr(node)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _parsed(path: str, mtime_ns: int) -> ast.Module:
    return _strip_docstrings(ast.parse(Path(path).read_text(), filename=path))


def _module_tree(module_name: str) -> tuple[ast.Module, Path]:
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    path = Path(module.__file__)
    return _parsed(str(path), path.stat().st_mtime_ns), path


@lru_cache(maxsize=None)
def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is a plain module, not a package
        return False


def _absolute(module_name: str, level: int, target: str | None, is_package: bool) -> str:
    """Absolute name of ``from <level dots><target> import ...`` written in ``module_name``."""
    if level == 0:
        return target or ""
    base = module_name.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(module_name: str, tree: ast.Module, is_package: bool) -> dict[str, str]:
    """Names bound by import statements anywhere in a module → the ``lib`` module (or module attribute) they denote."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lib"):
                    bound[(alias.asname or alias.name).split(".")[0]] = alias.name if alias.asname else "lib"
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module_name, node.level, node.module, is_package)
            if not source.startswith("lib"):
                continue
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                # `from .. import data` binds a module; `from ..training import fit` binds an attribute of one
                target = candidate if _is_module(candidate) else source
                bound[alias.asname or alias.name] = target
    return bound


def _lib_modules_of(module_name: str) -> set[str]:
    tree, path = _module_tree(module_name)
    return {m for m in _imports(module_name, tree, path.name == "__init__.py").values()}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _top_level(tree: ast.Module) -> dict[str, ast.stmt]:
    """Top-level name → the statement that defines it (functions, classes, assignments)."""
    defined = {}
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined[statement.name] = statement
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for name in _names(target):
                    defined[name] = statement
    return defined


def _module_digest(module_name: str) -> str:
    tree, _ = _module_tree(module_name)
    return hashlib.sha256(_serialise(tree).encode()).hexdigest()


CHAPTER_PREFIX = "lib.experiments."


def _is_chapter_definition(module: str, name: str) -> bool:
    """``name`` imported from a chapter module (``from .anti_aliasing import equivariance_maps``): a function or
    constant of another chapter, not the module itself."""
    return module.startswith(CHAPTER_PREFIX) and not _is_module(f"{module}.{name}")


def _reach(module_name: str, start: list[str], defined: dict | None = None):
    """The top-level definitions of ``module_name`` reached by name from ``start``, the ``lib`` modules they use, and
    the definitions of *other chapter modules* they import by name, as ``{(module, name), ...}``."""
    tree, path = _module_tree(module_name)
    defined = _top_level(tree) if defined is None else defined
    imported = _imports(module_name, tree, path.name == "__init__.py")
    reached, todo, modules, foreign = set(), list(start), set(), set()
    while todo:
        name = todo.pop()
        if name in reached or name not in defined:
            if name in imported:
                if _is_chapter_definition(imported[name], name):
                    foreign.add((imported[name], name))
                else:
                    modules.add(imported[name])
            continue
        reached.add(name)
        todo.extend(_names(defined[name]))
    return reached, modules, foreign


def _closure(modules) -> list[str]:
    """The ``lib`` modules in ``modules`` and, recursively, those they import (neutral modules excluded)."""
    closure, todo = set(), list(modules)
    while todo:
        name = todo.pop()
        if name in closure or name in NEUTRAL or not _is_module(name):
            continue
        closure.add(name)
        todo.extend(_lib_modules_of(name))
    return sorted(closure)


def _foreign_definitions(foreign: set) -> tuple[list[tuple[str, str]], set[str]]:
    """Another chapter's definitions that a run function imports (a synthesis chapter reusing the chapters'
    measurements) count definition by definition, like the function's own module, never as whole modules: editing a
    figure of that chapter must not make this chapter's results stale. Returns every reached ``(module, name)``
    (sorted) and the ``lib`` modules they use."""
    done, todo, modules = set(), sorted(foreign), set()
    while todo:
        module, name = todo.pop()
        if (module, name) in done:
            continue
        reached, used, more = _reach(module, [name])
        done |= {(module, n) for n in reached}
        modules |= used
        todo.extend(sorted(more - done))
    return sorted(done), modules


def dependencies(fn) -> tuple[list[str], list[str]]:
    """(definitions of ``fn``'s module that it reaches, ``lib`` modules it depends on), both sorted."""
    module_name = fn.__module__
    tree, _ = _module_tree(module_name)
    defined = _top_level(tree)
    if defined.get(fn.__name__) is None or "<locals>" in fn.__qualname__:
        defined = {**defined, fn.__name__: _local_definition(fn)}
    reached, modules, foreign = _reach(module_name, [fn.__name__], defined)
    _, foreign_modules = _foreign_definitions(foreign)
    return sorted(reached), _closure(modules | foreign_modules)


def _local_definition(fn) -> ast.stmt:
    """The syntax tree of a function defined inside another one (tests do that), from its own source."""
    import inspect
    import textwrap
    return _strip_docstrings(ast.parse(textwrap.dedent(inspect.getsource(fn)))).body[0]


def code_fingerprint(fn) -> str:
    """16 hex digits that change exactly when the code ``fn`` runs changes (see the module docstring)."""
    tree, _ = _module_tree(fn.__module__)
    defined = _top_level(tree)
    if defined.get(fn.__name__) is None or "<locals>" in fn.__qualname__:
        defined = {**defined, fn.__name__: _local_definition(fn)}
    own, modules = dependencies(fn)
    digest = hashlib.sha256()
    seen = set()
    for name in own:
        statement = defined[name]
        if id(statement) not in seen:  # `a = b = 1` defines two names with one statement
            seen.add(id(statement))
            digest.update(_serialise(statement).encode())
    for module in modules:
        digest.update(f"{module}:{_module_digest(module)}".encode())
    # other chapters' definitions, one by one (only where a run function imports some: the digest of every other
    # function is what it was before this rule existed)
    _, _, foreign = _reach(fn.__module__, [fn.__name__], defined)
    for module, name in _foreign_definitions(foreign)[0]:
        digest.update(f"{module}.{name}:{_serialise(_top_level(_module_tree(module)[0])[name])}".encode())
    return digest.hexdigest()[:16]
