"""Whose code it is: the user's own, which the code fingerprint follows by its code, or a
library's, which it counts by qualified name only.

A library is the standard library, an installed distribution (site-packages, dist-packages)
or nixlet itself. Counting their functions by name keeps upgrading a library (or moving
nixlet's code between its private modules) from renaming every derivation; following the
user's own code means that editing a helper in another module of the project renames the
derivations that use it.

The decision is made by where the code's file lives: under the interpreter's library
folders (the ``lib`` folders of ``sys.prefix`` and ``sys.base_prefix``, which hold the
standard library and a virtualenv's packages, ``site``'s package folders, and the
``site-packages`` and ``dist-packages`` folders on ``sys.path``), frozen or built in, is a
library's; anywhere else (a project folder, a notebook cell, ``__main__``)
is the user's. nixlet is recognised by its module name, not its file: an editable install
lives in a project folder.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import types


def is_nixlet(module_name: object) -> bool:
    """Whether ``module_name`` names nixlet or one of its modules."""
    return isinstance(module_name, str) and (
        module_name == "nixlet" or module_name.startswith("nixlet.")
    )


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """The folders whose files belong to the interpreter and its installed packages.

    Taken from the prefixes, ``site`` and ``sys.path`` rather than from
    ``sysconfig.get_paths()``, which costs a millisecond: a noticeable part of instantiating
    a small pipeline in a fresh process. The prefixes' ``lib`` folders hold the standard
    library and a virtualenv's or conda's ``site-packages``; Debian's ``dist-packages`` and
    other distributions' package folders are on ``sys.path`` under those names.
    """
    roots: set[str] = set()
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        roots.update(os.path.join(prefix, lib) for lib in ("lib", "lib64", "Lib"))
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    roots.update(
        entry
        for entry in sys.path
        if os.path.basename(entry.rstrip(os.sep)) in ("site-packages", "dist-packages")
    )
    # Both spellings: a venv's lib64 is often a symlink to lib, and code objects keep the
    # path they were imported by. (Only folders that exist: realpath of a missing one
    # walks every component, a tenth of a millisecond each.)
    existing = {r for r in roots if r and os.path.isdir(r)}
    normal = {os.path.normcase(os.path.abspath(r)) for r in existing}
    normal |= {os.path.normcase(os.path.realpath(r)) for r in existing}
    return tuple(sorted(normal))


@functools.lru_cache(maxsize=8192)
def is_library_file(filename: str) -> bool:
    """Whether the code of ``filename`` (a path, or a pseudo-name such as ``<stdin>``) is a
    library's. Pseudo-names are the user's (the prompt, ``exec``, a notebook cell), except
    frozen and built-in modules."""
    if filename.startswith("<"):
        return filename.startswith(("<frozen", "<built-in"))
    spellings = {
        os.path.normcase(os.path.abspath(filename)),
        os.path.normcase(os.path.realpath(filename)),
    }
    return any(
        path == root or path.startswith(root + os.sep)
        for path in spellings
        for root in _library_roots()
    )


def is_user_module(module: types.ModuleType) -> bool:
    """Whether ``module`` is one of the user's own modules."""
    name = getattr(module, "__name__", None)
    if is_nixlet(name) or name in sys.builtin_module_names:
        return False
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        return not is_library_file(file)
    origin = getattr(getattr(module, "__spec__", None), "origin", None)
    if origin in ("built-in", "frozen"):
        return False
    folders = getattr(module, "__path__", None)  # a namespace package has folders, no file
    if folders is not None:
        return not all(is_library_file(str(folder)) for folder in folders)
    # No file at all: __main__ of `python -c` or of the prompt, IPython's user namespace.
    return True


def is_user_function(fn: types.FunctionType) -> bool:
    """Whether ``fn`` is the user's own code: not nixlet's, and defined in a file (or a
    pseudo-file of the prompt, ``exec`` or a notebook) outside the library folders.

    The code's file decides first, as it is where the function really lives (a script run
    through ``runpy`` or a debugger has a borrowed ``__main__``); a pseudo-file falls back
    to the module the function names.
    """
    if is_nixlet(fn.__module__):
        return False
    filename = fn.__code__.co_filename
    if not filename.startswith("<"):
        return not is_library_file(filename)
    if is_library_file(filename):
        return False
    module = sys.modules.get(fn.__module__) if isinstance(fn.__module__, str) else None
    return module is None or is_user_module(module)


def is_user_class(cls: type) -> bool:
    """Whether ``cls`` is one of the user's own classes, by the module it names (a class
    whose module is not imported was made by ``exec`` in a namespace: the user's)."""
    name = cls.__module__
    if is_nixlet(name) or name == "builtins":
        return False
    module = sys.modules.get(name)
    return module is None or is_user_module(module)
