"""Edge conditions: a small, safe expression language compiled once to closures.

A condition is either a callable ``f(context) -> truthy`` or a string such as
``"context.get('score') >= 80"``. Strings are parsed once, at registration, with
``ast.parse(source, mode="eval")``; the tree is checked against a whitelist and
turned into nested Python closures. Nothing is ever passed to ``eval``, ``exec``
or ``compile``, and evaluating a condition does not parse anything again.

Allowed syntax:

* constants: str, int, float, bool, None;
* list, tuple, set and dict literals;
* comparisons, chained or not: ``== != < <= > >= in not in is is not``;
* ``and``, ``or``, ``not``; unary ``-`` and ``+``;
* binary ``+ - * / // % **`` (``%`` is arithmetic only, not string formatting);
* conditional expressions ``a if test else b``;
* subscripts and slices of evaluated values: ``x[0]``, ``x['k']``, ``x[1:3]``;
* ``context.get(key)`` and ``context.get(key, default)``, the only way to read
  the context (``context`` cannot be used in any other way);
* calls, with positional arguments only, of the functions in ``FUNCTIONS``:
  ``abs all any bool float int len max min round sorted str sum``. They are the
  builtins of those names, except that ``round`` refuses ``|ndigits| >
  MAX_EXPONENT`` (``round(1, -n)`` computes ``10 ** n``) and ``sum`` only takes a
  numeric start (summing lists is quadratic).

Everything else is a ``ConditionError`` at compile time: other names, attribute
access, dunder names, lambdas, comprehensions, f-strings, ``:=``, ``*``/``**``
unpacking, keyword arguments, ``await``/``yield``, bitwise operators...

Limits, which hold against hostile input:

* ``MAX_SOURCE_LENGTH``: longer sources are rejected before parsing;
* ``MAX_DEPTH``: deeper expression trees are rejected (checked iteratively);
* ``MAX_EXPONENT``: ``a ** b`` with ``|b|`` above it is refused at evaluation;
* ``MAX_INT_BITS``: integer literals, and integers produced by arithmetic or
  functions, may not exceed this many bits (``**`` and ``*`` are checked
  before computing);
* ``MAX_SEQUENCE_LENGTH``: ``seq * n`` may not produce more than this many items,
  counting the items (and characters) of nested containers, so ``[[0] * 10_000]
  * 10_000`` is refused too.

Any failure while evaluating, including a limit, is a ``ConditionEvaluationError``
whose message quotes the condition source.
"""

import ast
import operator
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from django_workflows.exceptions import ConditionError, ConditionEvaluationError

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_INT_BITS",
    "MAX_SEQUENCE_LENGTH",
    "MAX_SOURCE_LENGTH",
    "Condition",
    "compile_condition",
]

MAX_SOURCE_LENGTH = 2_000
MAX_DEPTH = 50
MAX_EXPONENT = 100
MAX_INT_BITS = 4_096
MAX_SEQUENCE_LENGTH = 10_000

# Error messages quote at most this much of the source.
_QUOTE_LENGTH = 120

# A compiled node: takes the context, returns the node's value.
_Evaluator = Callable[[Any], Any]


class _Refused(Exception):
    """A resource limit tripped while evaluating (becomes ConditionEvaluationError)."""


# --- guarded operations -------------------------------------------------------------------------

_STRINGS = (str, bytes, bytearray)
_SEQUENCES = (str, bytes, bytearray, list, tuple)


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _Refused(f"integer result exceeds {MAX_INT_BITS} bits")
    return value


def _deep_size(obj: Any, budget: int) -> int:
    """Count items (and characters) in obj, nested containers included.

    Iterative, and stops as soon as the count passes budget, so it is cheap on
    huge, cyclic or deeply nested values.
    """
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, _STRINGS):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset, dict)):
            total += len(item)
            if total > budget:
                return total
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
        if total > budget:
            return total
    return total


def _mul(a: Any, b: Any) -> Any:
    for seq, count in ((a, b), (b, a)):
        if (
            isinstance(seq, _SEQUENCES)
            and isinstance(count, int)
            and count > 0
            and _deep_size(seq, MAX_SEQUENCE_LENGTH) * count > MAX_SEQUENCE_LENGTH
        ):
            raise _Refused(f"sequence repetition would exceed {MAX_SEQUENCE_LENGTH} items")
    if (
        isinstance(a, int)
        and isinstance(b, int)
        and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1
    ):
        raise _Refused(f"integer result exceeds {MAX_INT_BITS} bits")
    return a * b


def _pow(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, (int, float)) and abs(exponent) > MAX_EXPONENT:
        raise _Refused(f"exponent exceeds {MAX_EXPONENT} in absolute value")
    # |base| >= 2 ** (bits - 1), so the result has at least (bits - 1) * exponent + 1
    # bits: refuse before computing; the exact size is checked afterwards.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 1
        and (abs(base).bit_length() - 1) * exponent >= MAX_INT_BITS
    ):
        raise _Refused(f"integer result exceeds {MAX_INT_BITS} bits")
    return base**exponent


def _mod(a: Any, b: Any) -> Any:
    # "%999999999d" % 1 would allocate a gigabyte: no printf-style formatting.
    if isinstance(a, _STRINGS):
        raise _Refused("string formatting with % is not allowed")
    return a % b


def _in(a: Any, b: Any) -> bool:
    return a in b


def _not_in(a: Any, b: Any) -> bool:
    return a not in b


def _round(number: Any, ndigits: Any = None) -> Any:
    # int.__round__(-n) computes 10 ** n.
    if isinstance(ndigits, int) and abs(ndigits) > MAX_EXPONENT:
        raise _Refused(f"round() ndigits exceeds {MAX_EXPONENT} in absolute value")
    return round(number, ndigits)


def _sum(iterable: Any, start: Any = 0) -> Any:
    # Summing lists or tuples is quadratic; conditions only need numbers.
    if not isinstance(start, (int, float)):
        raise TypeError("sum() start must be a number")
    return sum(iterable, start)


FUNCTIONS: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
    {
        "abs": abs,
        "all": all,
        "any": any,
        "bool": bool,
        "float": float,
        "int": int,
        "len": len,
        "max": max,
        "min": min,
        "round": _round,
        "sorted": sorted,
        "str": str,
        "sum": _sum,
    }
)

_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
}

_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.MatMult: "@",
    ast.Invert: "~",
}

_COMPARE_OPERATORS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: _in,
    ast.NotIn: _not_in,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}

_CONSTANT_TYPES = (str, int, float, bool, type(None))

# Friendlier messages for syntax that is rejected outright.
_REJECTED: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda expressions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred expressions (*x) are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "slices are only allowed directly inside [...]",
}


# --- compiler -----------------------------------------------------------------------------------


def _quote(source: str) -> str:
    if len(source) > _QUOTE_LENGTH:
        source = source[: _QUOTE_LENGTH - 3] + "..."
    return repr(source)


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_context_get(node: ast.AST, name: str = "context") -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "get"
        and isinstance(node.value, ast.Name)
        and node.value.id == name
    )


def _const(value: Any) -> _Evaluator:
    return lambda context: value


class _Compiler:
    """Turns a checked AST into closures; raises ConditionError for anything else."""

    def __init__(self, source: str, name: str = "context") -> None:
        self.source = source
        self.name = name  # the one name in scope ("result" for a human step's veto)
        self._dispatch: dict[type[ast.AST], Callable[[Any], _Evaluator]] = {
            ast.Constant: self._constant,
            ast.List: self._list,
            ast.Tuple: self._tuple,
            ast.Set: self._set,
            ast.Dict: self._dict,
            ast.BoolOp: self._bool_op,
            ast.UnaryOp: self._unary_op,
            ast.BinOp: self._bin_op,
            ast.Compare: self._compare,
            ast.IfExp: self._if_exp,
            ast.Subscript: self._subscript,
            ast.Call: self._call,
            ast.Name: self._name,
            ast.Attribute: self._attribute,
        }

    def error(self, reason: str) -> ConditionError:
        return ConditionError(f"{reason} in condition {_quote(self.source)}")

    def compile(self, node: ast.AST) -> _Evaluator:
        method = self._dispatch.get(type(node))
        if method is None:
            reason = _REJECTED.get(type(node), f"{type(node).__name__} expressions are not allowed")
            raise self.error(reason)
        return method(node)

    def _many(self, nodes: list[ast.expr]) -> list[_Evaluator]:
        return [self.compile(node) for node in nodes]

    def _constant(self, node: ast.Constant) -> _Evaluator:
        value = node.value
        if not isinstance(value, _CONSTANT_TYPES):
            raise self.error(f"constants of type {type(value).__name__} are not allowed")
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise self.error(f"integer literal exceeds {MAX_INT_BITS} bits")
        return _const(value)

    def _list(self, node: ast.List) -> _Evaluator:
        items = self._many(node.elts)
        return lambda context: [item(context) for item in items]

    def _tuple(self, node: ast.Tuple) -> _Evaluator:
        items = self._many(node.elts)
        return lambda context: tuple(item(context) for item in items)

    def _set(self, node: ast.Set) -> _Evaluator:
        items = self._many(node.elts)
        return lambda context: {item(context) for item in items}

    def _dict(self, node: ast.Dict) -> _Evaluator:
        if any(key is None for key in node.keys):
            raise self.error("dict unpacking (**) is not allowed")
        pairs = [
            (self.compile(k), self.compile(v)) for k, v in zip(node.keys, node.values, strict=True)
        ]
        return lambda context: {key(context): value(context) for key, value in pairs}

    def _bool_op(self, node: ast.BoolOp) -> _Evaluator:
        operands = self._many(node.values)
        # Python semantics: short-circuit and return the deciding operand.
        if isinstance(node.op, ast.And):

            def and_(context: Any) -> Any:
                for operand in operands:
                    value = operand(context)
                    if not value:
                        return value
                return value

            return and_

        def or_(context: Any) -> Any:
            for operand in operands:
                value = operand(context)
                if value:
                    return value
            return value

        return or_

    def _unary_op(self, node: ast.UnaryOp) -> _Evaluator:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda context: not operand(context)
        if isinstance(node.op, ast.USub):
            return lambda context: -operand(context)
        if isinstance(node.op, ast.UAdd):
            return lambda context: +operand(context)
        symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
        raise self.error(f"operator {symbol} is not allowed")

    def _bin_op(self, node: ast.BinOp) -> _Evaluator:
        function = _BINARY_OPERATORS.get(type(node.op))
        if function is None:
            symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
            raise self.error(f"operator {symbol} is not allowed")
        left, right = self.compile(node.left), self.compile(node.right)
        return lambda context: _check_int(function(left(context), right(context)))

    def _compare(self, node: ast.Compare) -> _Evaluator:
        left = self.compile(node.left)
        steps = [
            (_COMPARE_OPERATORS[type(op)], self.compile(right))
            for op, right in zip(node.ops, node.comparators, strict=True)
        ]
        if len(steps) == 1:
            ((function, right),) = steps
            return lambda context: function(left(context), right(context))

        # a < b < c: each operand evaluated once, stop at the first false step.
        def chained(context: Any) -> Any:
            a = left(context)
            result: Any = True
            for function, right in steps:
                b = right(context)
                result = function(a, b)
                if not result:
                    return result
                a = b
            return result

        return chained

    def _if_exp(self, node: ast.IfExp) -> _Evaluator:
        test, body, orelse = (
            self.compile(node.test),
            self.compile(node.body),
            self.compile(node.orelse),
        )
        return lambda context: body(context) if test(context) else orelse(context)

    def _subscript(self, node: ast.Subscript) -> _Evaluator:
        value = self.compile(node.value)
        if isinstance(node.slice, ast.Slice):
            lower, upper, step = (
                _const(None) if part is None else self.compile(part)
                for part in (node.slice.lower, node.slice.upper, node.slice.step)
            )
            return lambda context: value(context)[
                slice(lower(context), upper(context), step(context))
            ]
        index = self.compile(node.slice)
        return lambda context: value(context)[index(context)]

    def _call(self, node: ast.Call) -> _Evaluator:
        if any(keyword.arg is None for keyword in node.keywords):
            raise self.error("argument unpacking (**kwargs) is not allowed")
        if node.keywords:
            raise self.error("keyword arguments are not allowed")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.error("argument unpacking (*args) is not allowed")
        func, scope = node.func, self.name
        if _is_context_get(func, scope):
            if not 1 <= len(node.args) <= 2:
                raise self.error(f"{scope}.get() takes a key and an optional default")
            key = self.compile(node.args[0])
            if len(node.args) == 1:
                return lambda context: context.get(key(context))
            default = self.compile(node.args[1])
            return lambda context: context.get(key(context), default(context))
        if isinstance(func, ast.Name):
            name = func.id
            if _is_dunder(name):
                raise self.error(f"dunder names are not allowed: {name!r}")
            if name == scope:
                raise self.error(f"{scope!r} is not callable; use {scope}.get('key')")
            function = FUNCTIONS.get(name)
            if function is None:
                allowed = ", ".join(sorted(FUNCTIONS))
                raise self.error(f"function {name!r} is not allowed (allowed: {allowed})")
            args = self._many(node.args)
            return lambda context: _check_int(function(*[arg(context) for arg in args]))
        if isinstance(func, ast.Attribute):
            self.compile(func)  # raises the attribute-access error
        raise self.error(f"only the whitelisted functions and {scope}.get() can be called")

    def _name(self, node: ast.Name) -> _Evaluator:
        name, scope = node.id, self.name
        if _is_dunder(name):
            raise self.error(f"dunder names are not allowed: {name!r}")
        if name == scope:
            raise self.error(f"{scope!r} can only be used as {scope}.get(key[, default])")
        if name in FUNCTIONS:
            raise self.error(f"function {name!r} must be called, e.g. {name}(...)")
        raise self.error(f"name {name!r} is not defined; use {scope}.get({name!r})")

    def _attribute(self, node: ast.Attribute) -> _Evaluator:
        scope = self.name
        if _is_context_get(node, scope):
            raise self.error(f"{scope}.get must be called, e.g. {scope}.get('key')")
        reason = f"attribute access is not allowed: '.{node.attr}'"
        if isinstance(node.value, ast.Name) and node.value.id == scope:
            reason += f" (only {scope}.get(...) is)"
        else:
            # Report the innermost problem first: __import__('os').system -> '__import__'.
            self.compile(node.value)
        raise self.error(reason)


def _check_depth(tree: ast.Expression, source: str) -> None:
    # Iterative on purpose: a recursive walk would itself overflow on hostile input.
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConditionError(
                f"condition is nested too deeply (limit {MAX_DEPTH}) in condition {_quote(source)}"
            )
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1 if isinstance(child, ast.expr) else depth))


def _parse(source: str) -> ast.Expression:
    if len(source) > MAX_SOURCE_LENGTH:
        raise ConditionError(
            f"condition is too long ({len(source)} characters; limit {MAX_SOURCE_LENGTH})"
        )
    stripped = source.strip()
    try:
        # Invalid escapes like "\d" warn; under -W error that would reject a valid condition.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # eval mode refuses leading indentation; strip it like eval() does.
            return ast.parse(stripped, mode="eval")
    except SyntaxError as exc:
        offset = exc.offset
        if offset and exc.lineno == 1:
            offset += len(source) - len(source.lstrip())
        where = f" at column {offset}" if offset else ""
        raise ConditionError(
            f"invalid syntax: {exc.msg}{where} in condition {_quote(source)}"
        ) from exc
    except (RecursionError, MemoryError) as exc:
        raise ConditionError(f"condition is nested too deeply: {_quote(source)}") from exc
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. lone surrogates
        raise ConditionError(f"cannot parse condition {_quote(source)}: {exc}") from exc


def _format_exception(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # str() of a huge int key, a broken __str__...
        text = "<unprintable>"
    if len(text) > _QUOTE_LENGTH:
        text = text[: _QUOTE_LENGTH - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_callable(function: Callable[..., Any]) -> str:
    try:
        module = getattr(function, "__module__", None) or type(function).__module__
        qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
        return f"<callable {module}.{qualname}>"
    except Exception:
        return "<callable>"


# --- public API ---------------------------------------------------------------------------------


class Condition:
    """A compiled condition. Call it with a context (anything with ``.get``) to get a bool."""

    __slots__ = ("_evaluate", "source")

    def __init__(self, source: str, evaluate: Callable[[Any], Any]) -> None:
        self.source = source
        self._evaluate = evaluate

    def __call__(self, context: Any) -> bool:
        try:
            return bool(self._evaluate(context))
        except ConditionEvaluationError:
            raise
        except _Refused as exc:
            raise ConditionEvaluationError(
                f"condition {_quote(self.source)} refused: {exc}"
            ) from exc
        except Exception as exc:
            raise ConditionEvaluationError(
                f"condition {_quote(self.source)} failed: {_format_exception(exc)}"
            ) from exc

    def __repr__(self) -> str:
        return f"Condition({_quote(self.source)})"


_FOLDABLE = (
    ast.BinOp,
    ast.UnaryOp,
    ast.Call,
    ast.Compare,
    ast.BoolOp,
    ast.Subscript,
    ast.Dict,
    ast.Set,
)


def _check_constants(tree: ast.Expression, source: str, name: str = "context") -> None:
    """Evaluate the parts that do not read the context once, now: one that can only fail
    (``10 ** 10 ** 10``, ``1 / 0``) is refused at registration, not in every instance."""
    stack: list[ast.AST] = [tree.body]
    while stack:
        node = stack.pop()
        reads_context = any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))
        if reads_context:
            stack.extend(ast.iter_child_nodes(node))
            continue
        if not isinstance(node, _FOLDABLE):
            continue
        try:
            _Compiler(source, name).compile(node)(None)
        except ConditionError:
            raise
        except _Refused as exc:
            raise ConditionError(f"{exc} in condition {_quote(source)}") from exc
        except Exception as exc:
            raise ConditionError(
                f"{ast.unparse(node)!r} always fails ({_format_exception(exc)}) "
                f"in condition {_quote(source)}"
            ) from exc


def compile_condition(condition: str | Callable[[Any], Any], *, name: str = "context") -> Condition:
    """Compile a condition string (or wrap a callable) into a ``Condition``.

    ``name``: what the string calls the mapping it reads (``name.get(key)``); a human
    step's ``veto`` reads ``result``. Raises ``ConditionError`` if the string is not
    allowed or does not parse, or if ``condition`` is neither a string nor a callable.
    """
    if isinstance(condition, Condition):
        return condition
    if isinstance(condition, str):
        try:
            tree = _parse(condition)
            _check_depth(tree, condition)
            evaluate = _Compiler(condition, name).compile(tree.body)
            _check_constants(tree, condition, name)
        except ConditionError:
            raise
        except (RecursionError, MemoryError) as exc:
            raise ConditionError(f"condition is too complex: {_quote(condition)}") from exc
        except Exception as exc:  # never let anything but ConditionError escape
            raise ConditionError(
                f"cannot compile condition {_quote(condition)}: {_format_exception(exc)}"
            ) from exc
        return Condition(condition, evaluate)
    if callable(condition):
        return Condition(_describe_callable(condition), condition)
    raise ConditionError(
        f"a condition must be a string or a callable, not {type(condition).__name__}"
    )
