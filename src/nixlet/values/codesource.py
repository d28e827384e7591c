"""What of a function's code the fingerprint reads: its normalised source, and the names and
module attributes it loads.

The normalised source is the function's syntax tree with docstrings left out, in a textual
form that is the same on every Python >= 3.11: comments, formatting and docstrings do not
count, and the same function typed in a script, a module, IPython or a notebook cell (which
register their cells in ``linecache``) reads the same. Where the source cannot be found (the
plain ``python`` prompt, ``exec`` of a string, ``python -c``), the compiled bytecode and
constants stand in; they are stable for one Python version only, so a ``NixletWarning`` says
so, once per function.
"""

from __future__ import annotations

import ast
import dis
import inspect
import linecache
import sys
import textwrap
import tokenize
import types
import warnings
from collections.abc import Iterator
from typing import NamedTuple

from nixlet.values.errors import NixletWarning

#: What ``inspect.getsource`` and a parse raise where the source is missing (OSError), not
#: Python's (TypeError: a built-in), or not the code that runs (the file changed since).
_NOT_FOUND = (OSError, TypeError, SyntaxError, ValueError, tokenize.TokenError)


class Reading(NamedTuple):
    """What the fingerprint reads of one function's code."""

    #: The normalised source, or the bytecode text where there is no source.
    text: str
    #: Whether ``text`` is the source (else the caller warns: see ``warn_sourceless``).
    from_source: bool
    #: The dotted chains the code reads on a name, sorted (see ``attribute_chains``).
    chains: tuple[tuple[str, ...], ...]


def read(fn: types.FunctionType) -> Reading:
    """Read ``fn``'s code: from its syntax tree where the source is found (the chains too,
    from the tree already parsed: ``dis`` costs about as much as the parse), else from its
    bytecode."""
    node = _source_node(fn)
    if node is None:
        return Reading(bytecode_text(fn.__code__), False, attribute_chains(fn.__code__))
    attributes: list[ast.Attribute] = []
    text = _dump(node, attributes)
    return Reading(text, True, _tree_chains(attributes))


def normalised_source(fn: types.FunctionType) -> tuple[str, bool]:
    """The normalised source of ``fn`` and True, or its bytecode text and False where the
    source cannot be found."""
    node = _source_node(fn)
    if node is None:
        return bytecode_text(fn.__code__), False
    return dump(node), True


def _source_node(fn: types.FunctionType) -> ast.AST | None:
    """The syntax tree of ``fn`` without docstrings, or None where there is no source."""
    if fn.__code__.co_name == "<lambda>":
        return _lambda_node(fn)
    tree = function_node(fn)
    if tree is None:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        except _NOT_FOUND:
            return None
    return strip_docstrings(tree)


def warn_sourceless(fn: types.FunctionType) -> None:
    """Say that ``fn``'s fingerprint falls back to bytecode, and how to avoid it."""
    code = fn.__code__
    name = f"{fn.__module__}.{fn.__qualname__}" if fn.__module__ else fn.__qualname__
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    # warn_explicit points at the function itself (a stack level would point somewhere in
    # the user's call of instantiate, at a depth that varies), and without a registry it is
    # not deduplicated here: the caller warns once per function.
    warnings.warn_explicit(
        f"nixlet cannot find the source of {name} (defined in {code.co_filename}), so its "
        f"code fingerprint uses its bytecode: the DRefs built with it depend on the Python "
        f"version ({version}) and change with it. Define it in a file (a module, a script or "
        f"a notebook cell), or give mkdrv(..., version=...) to name the code yourself.",
        NixletWarning,
        code.co_filename,
        code.co_firstlineno,
    )


def function_node(fn: types.FunctionType) -> ast.Module | None:
    """The parsed definition of ``fn``, or None where it cannot be found this way (a
    lambda, no source, a definition the block rule below cannot delimit).

    ``inspect.getsource`` finds the same text with Python's tokenizer, whose first use in a
    process costs milliseconds: a noticeable part of instantiating a small pipeline from a
    fresh process. Here the block is delimited by indentation instead: after the ``def``
    line, it ends at the first line indented no deeper than the definition that is not
    blank, a comment, or a closing bracket. Inside a function, such a line can only be
    part of a string, a bracket or a continuation, and a block cut there does not parse:
    a wrong block is refused (by the parse or the name check), and the caller falls back
    to ``inspect``.
    """
    code = fn.__code__
    if code.co_name == "<lambda>":
        return None
    lines = _lines(fn)
    start = code.co_firstlineno - 1
    if not 0 <= start < len(lines):
        return None
    indent = _indent(lines[start])
    end = start
    while end < len(lines) and not lines[end].lstrip().startswith(("def ", "async def ")):
        end += 1  # decorators
    end += 1
    while end < len(lines):
        line = lines[end]
        text = line.strip()
        if text and not text.startswith(("#", ")", "]", "}")) and _indent(line) <= indent:
            break
        end += 1
    try:
        tree = ast.parse(textwrap.dedent("".join(lines[start:end])))
    except (SyntaxError, ValueError):
        return None
    if (
        len(tree.body) == 1
        and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
        and tree.body[0].name == code.co_name
    ):
        return tree
    return None


def _lines(fn: types.FunctionType) -> list[str]:
    linecache.checkcache(fn.__code__.co_filename)
    return linecache.getlines(fn.__code__.co_filename, fn.__globals__)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# ---------------------------------------------------------------- lambdas

#: Per file: its lines as linecache holds them, and the lambdas of its syntax tree (None
#: where the file is not Python as a whole, such as a markdown page whose blocks were run).
_file_lambdas: dict[str, tuple[list[str], list[ast.Lambda] | None]] = {}


def _lambda_node(fn: types.FunctionType) -> ast.Lambda | None:
    """The syntax tree of the lambda ``fn``, found by position.

    Several lambdas often share a line (``instantiate(lambda m: mkdrv(..., build_wrapper(
    lambda b: ...)))``). The lambda's instructions carry the positions of its body, which
    lie inside exactly one lambda's body innermost; the file is parsed whole for that, or,
    where it is not Python as a whole, the statement ``inspect`` finds.
    """
    span = _code_span(fn.__code__)
    lines = _lines(fn)
    cached = _file_lambdas.get(fn.__code__.co_filename)
    if cached is None or cached[0] is not lines:
        cached = (lines, _parse_lambdas("".join(lines), 0, 0))
        _file_lambdas[fn.__code__.co_filename] = cached
    candidates = cached[1]
    if candidates is None:
        candidates = _statement_lambdas(fn)
    if span is None:
        # No positions to match (a lambda of constants): only a lone lambda is ours for sure.
        return candidates[0] if candidates is not None and len(candidates) == 1 else None
    inside = [node for node in candidates or [] if _body_contains(node, span)]
    return max(inside, key=lambda n: (n.body.lineno, n.body.col_offset), default=None)


def _statement_lambdas(fn: types.FunctionType) -> list[ast.Lambda] | None:
    try:
        source = inspect.getsource(fn)
    except _NOT_FOUND:
        return None
    first = source.splitlines()[0] if source else ""
    dedented = textwrap.dedent(source)
    shift = _indent(first) - _indent(dedented.splitlines()[0] if dedented else "")
    return _parse_lambdas(dedented, fn.__code__.co_firstlineno - 1, shift)


def _parse_lambdas(text: str, line_shift: int, col_shift: int) -> list[ast.Lambda] | None:
    """The lambdas of ``text``, their bodies' positions moved to where ``text`` sits in its
    file."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    found = [node for node in ast.walk(tree) if isinstance(node, ast.Lambda)]
    for node in found:
        body = node.body  # each lambda's own body: a lambda in a lambda is shifted once
        body.lineno += line_shift
        body.end_lineno = (body.end_lineno or body.lineno) + line_shift
        body.col_offset += col_shift
        body.end_col_offset = (body.end_col_offset or 0) + col_shift
    return found


def _code_span(code: types.CodeType) -> tuple[int, int, int, int] | None:
    """The source span a lambda's instructions cover: its body, where positions exist."""
    spans = [
        (line, col, end_line, end_col)
        for line, end_line, col, end_col in code.co_positions()
        if line is not None
        and end_line is not None
        and col is not None
        and end_col is not None
        and (line, col) != (end_line, end_col)  # zero-width: the function's own entry
    ]
    if not spans:
        return None
    start = min((s[0], s[1]) for s in spans)
    end = max((s[2], s[3]) for s in spans)
    return (*start, *end)


def _body_contains(node: ast.Lambda, span: tuple[int, int, int, int]) -> bool:
    body = node.body
    start = (body.lineno, body.col_offset)
    end = (body.end_lineno or body.lineno, body.end_col_offset or 0)
    return start <= span[:2] and span[2:] <= end


# ---------------------------------------------------------------- the textual form


def dump(node: object) -> str:
    """A textual form of an AST that is the same on every Python >= 3.11.

    ``ast.dump`` is not: 3.12 adds ``type_params=[]`` to every function and 3.13 leaves out
    empty fields, so the same function would get three fingerprints. Fields that are
    ``None`` or empty are left out here, and fields are named.
    """
    return _dump(node, [])


def _dump(node: object, attributes: list[ast.Attribute]) -> str:
    """``dump``, collecting the attribute nodes on the way (for ``_tree_chains``: a second
    walk over the tree would cost a third of the dump)."""
    if isinstance(node, ast.AST):
        if isinstance(node, ast.Attribute):
            attributes.append(node)
        fields = []
        for name, value in ast.iter_fields(node):
            if value is None or value == []:
                continue
            fields.append(f"{name}={_dump(value, attributes)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return f"[{','.join(_dump(item, attributes) for item in node)}]"
    return f"{type(node).__name__}:{node!r}"


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` without the docstrings of its functions, classes and module."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def bytecode_text(code: types.CodeType) -> str:
    """The compiled code and its constants, where no source is found: stable for one
    Python version (sets and dicts among the constants in sorted order)."""
    consts = [
        bytecode_text(c) if isinstance(c, types.CodeType) else stable_repr(c)
        for c in code.co_consts
        if not (isinstance(c, str) and c == code.co_consts[0] and c.startswith(("\n", " ")))
    ]
    return f"bytecode:{code.co_code.hex()}:{consts}:{code.co_names}"


def stable_repr(value: object) -> str:
    """``repr`` with sets and dicts in sorted order: their iteration order follows
    ``hash()``, which Python randomises per process for strings."""
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({sorted(stable_repr(v) for v in value)})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({[stable_repr(v) for v in value]})"
    if isinstance(value, dict):
        items = sorted((stable_repr(k), stable_repr(v)) for k, v in value.items())
        return f"dict({items})"
    return repr(value)


# ---------------------------------------------------------------- what the code loads

# Loading a name, and reading an attribute of what was loaded; the opcodes differ between
# Python versions (3.11 reads a method with LOAD_METHOD, 3.12 with LOAD_ATTR), the chains
# they spell do not.
_LOAD_NAME = frozenset(
    {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_GLOBALS"}
)
_LOAD_ATTR = frozenset({"LOAD_ATTR", "LOAD_METHOD"})


def global_names(code: types.CodeType) -> tuple[str, ...]:
    """Every name the code and its nested code (inner functions, comprehensions) may read
    as a global, sorted. Attribute names are among them: a global that happens to share an
    attribute's name then counts too, which costs nothing but a little hashing."""
    return tuple(sorted(_names(code)))


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def attribute_chains(code: types.CodeType) -> tuple[tuple[str, ...], ...]:
    """The dotted chains the code reads on a name, sorted: ``helpers.prepare(x)`` gives
    ``("helpers", "prepare")``, ``pkg.sub.fn`` gives ``("pkg", "sub", "fn")``."""
    chains: set[tuple[str, ...]] = set()
    for nested in _codes(code):
        chain: list[str] = []
        for ins in dis.get_instructions(nested):
            if ins.opname == "EXTENDED_ARG":
                continue
            if chain and ins.opname in _LOAD_ATTR:
                chain.append(str(ins.argval))
                continue
            if len(chain) > 1:
                chains.add(tuple(chain))
            chain = [str(ins.argval)] if ins.opname in _LOAD_NAME else []
        if len(chain) > 1:
            chains.add(tuple(chain))
    return tuple(sorted(chains))


def _tree_chains(attributes: list[ast.Attribute]) -> tuple[tuple[str, ...], ...]:
    """``attribute_chains`` read off the attribute nodes of a syntax tree: each outermost
    ``a.b.c`` that is read and starts at a name. Defaults and decorators are in the tree
    too (they are evaluated outside the function's code), and so are chains on local
    variables: counting them as well costs nothing but a little hashing."""
    inner = {id(node.value) for node in attributes}
    chains: set[tuple[str, ...]] = set()
    for outer in attributes:
        if id(outer) in inner:
            continue
        # a.b.c = x stores into a.b, which it reads.
        node: ast.expr = outer if isinstance(outer.ctx, ast.Load) else outer.value
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and attrs:
            chains.add((node.id, *reversed(attrs)))
    return tuple(sorted(chains))


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)
