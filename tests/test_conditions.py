"""Tests for django_workflows.conditions (pure Python: no Django needed)."""

import ast
import builtins
import re
import time
from collections import ChainMap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from django_workflows import conditions
from django_workflows.conditions import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_INT_BITS,
    MAX_SEQUENCE_LENGTH,
    MAX_SOURCE_LENGTH,
    Condition,
    compile_condition,
)
from django_workflows.exceptions import ConditionError, ConditionEvaluationError


def check(source, context=None):
    return compile_condition(source)(context if context is not None else {})


# --- reference examples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "context", "expected"),
    [
        ("context.get('score') >= 80", {"score": 85}, True),
        ("context.get('score') >= 80", {"score": 70}, False),
        ("context.get('score') >= 80", {"score": 80}, True),
        ("context.get('approved') == True", {"approved": True}, True),
        ("context.get('approved') == True", {"approved": False}, False),
        ("context.get('approved') != True", {}, True),
        ("context.get('x', 5) > 3", {}, True),
        ("context.get('x', 5) > 3", {"x": 1}, False),
        ("len(context.get('items', [])) > 2", {"items": [1, 2, 3]}, True),
        ("len(context.get('items', [])) > 2", {}, False),
        ("context.get('a') in ['x', 'y']", {"a": "y"}, True),
        ("context.get('a') in ['x', 'y']", {"a": "z"}, False),
        ("context.get('a') not in ('x', 'y')", {"a": "z"}, True),
        ("context.get('a') is None", {}, True),
        ("context.get('a') is not None", {"a": 0}, True),
        # boolean combinations
        ("context.get('a') and context.get('b')", {"a": 1, "b": 2}, True),
        ("context.get('a') and context.get('b')", {"a": 1}, False),
        ("context.get('a') or context.get('b')", {"b": 1}, True),
        ("not context.get('a')", {}, True),
        ("context.get('a') > 1 and not context.get('b') or context.get('c')", {"a": 2}, True),
        # short-circuit: the right side would fail
        ("context.get('n') is not None and context.get('n') > 3", {}, False),
        ("True or 1 / 0", {}, True),
        ("False and 1 / 0", {}, False),
        # arithmetic
        ("context.get('a') + context.get('b') * 2 == 7", {"a": 1, "b": 3}, True),
        ("7 // 2 == 3 and 7 % 3 == 1 and 7 / 2 == 3.5", {}, True),
        ("2 ** 10 == 1024 and 2 ** -1 == 0.5", {}, True),
        ("-context.get('a') == +(-3)", {"a": 3}, True),
        ("'ab' * 2 == 'abab' and 2 * [0] == [0, 0]", {}, True),
        ("'a' + 'b' == 'ab'", {}, True),
        # chained comparisons
        ("0 < context.get('x') <= 10", {"x": 10}, True),
        ("0 < context.get('x') <= 10", {"x": 11}, False),
        ("1 == 1 != 2", {}, True),
        # ternary
        ("(context.get('a') if context.get('flag') else context.get('b')) == 1", {"a": 1}, False),
        ("(context.get('a') if context.get('flag') else context.get('b')) == 1", {"b": 1}, True),
        # subscripts and slices
        ("context.get('items')[0] == 'x'", {"items": ["x", "y"]}, True),
        ("context.get('items')[-1] == 'y'", {"items": ["x", "y"]}, True),
        ("context.get('user')['role'] == 'admin'", {"user": {"role": "admin"}}, True),
        ("context.get('items')[1:] == ['y']", {"items": ["x", "y"]}, True),
        ("'abcdef'[::2] == 'ace'", {}, True),
        ("[1, 2, 3][:context.get('n', 2)] == [1, 2]", {}, True),
        # literals
        ("{'a': 1}['a'] == 1 and {1, 2} == {2, 1} and (1,) == (1,)", {}, True),
        ("[] == [] and () == () and {} == {}", {}, True),
        ("None == None and 1.5 > 1", {}, True),
        # functions
        ("abs(-3) == 3 and min(3, 1, 2) == 1 and max([1, 5]) == 5", {}, True),
        ("round(2.567, 2) == 2.57 and round(2.5) == 2", {}, True),
        ("int('5') + 1 == 6 and float('1.5') == 1.5 and str(12) == '12'", {}, True),
        ("bool(0) == False and sum([1, 2, 3]) == 6 and sum([1], 10) == 11", {}, True),
        ("any([0, 1]) and not all([0, 1])", {}, True),
        ("sorted(context.get('xs')) == [1, 2, 3]", {"xs": [3, 1, 2]}, True),
        # a dunder-looking *key* is only data
        ("context.get('__class__') == 1", {"__class__": 1}, True),
        # surrounding whitespace and newlines inside brackets
        ("  context.get('a') == 1  ", {"a": 1}, True),
        ("(context.get('a')\n == 1)", {"a": 1}, True),
    ],
)
def test_examples(source, context, expected):
    assert check(source, context) is expected


def test_result_is_always_bool():
    condition = compile_condition("context.get('a')")
    assert condition({"a": "x"}) is True
    assert condition({"a": []}) is False
    assert compile_condition("context.get('a') or context.get('b')")({"b": [1]}) is True


def test_condition_keeps_source():
    condition = compile_condition("context.get('a') == 1")
    assert isinstance(condition, Condition)
    assert condition.source == "context.get('a') == 1"
    assert "context.get('a') == 1" in repr(condition)


def test_compiling_a_condition_returns_it():
    condition = compile_condition("True")
    assert compile_condition(condition) is condition


def test_context_can_be_any_object_with_get():
    class Context:
        def get(self, key, default=None):
            return {"a": 1}.get(key, default)

    assert check("context.get('a') == 1", Context()) is True
    assert check("context.get('b', 2) == 2", Context()) is True
    assert check("context.get('a') == 1", ChainMap({}, {"a": 1})) is True


def test_chained_comparison_evaluates_each_operand_once():
    calls = []

    class Context(dict):
        def get(self, key, default=None):
            calls.append(key)
            return super().get(key, default)

    assert check("1 < context.get('x') < 10", Context(x=5)) is True
    assert calls == ["x"]


def test_invalid_escape_in_string_is_not_an_error():
    # filterwarnings=error would turn the parser's DeprecationWarning into a SyntaxError.
    assert check(r"context.get('p') == '\d'", {"p": "\\d"}) is True


def test_evaluation_never_parses_or_evals(monkeypatch):
    condition = compile_condition("len(context.get('xs', [])) >= 2 and context.get('a')[0] == 1")

    def forbidden(*args, **kwargs):
        raise AssertionError("must not be called at evaluation time")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    monkeypatch.setattr(ast, "parse", forbidden)
    for _ in range(100):
        assert condition({"xs": [1, 2], "a": [1]}) is True


# --- callables ------------------------------------------------------------------------------------


def is_big(context):
    return context.get("size", 0) > 10


def test_callable_condition():
    condition = compile_condition(is_big)
    assert condition({"size": 11}) is True
    assert condition({}) is False
    assert condition.source.startswith("<callable ")
    assert condition.source.endswith("is_big>")


def test_callable_result_is_coerced_to_bool():
    condition = compile_condition(lambda context: context.get("items"))
    assert condition({"items": [1]}) is True
    assert condition({"items": []}) is False
    assert condition.source.endswith("<lambda>>")


def test_callable_exceptions_are_wrapped():
    def broken(context):
        raise KeyError("boom")

    condition = compile_condition(broken)
    with pytest.raises(ConditionEvaluationError, match="broken") as info:
        condition({})
    assert isinstance(info.value.__cause__, KeyError)


def test_callable_with_unprintable_exception():
    class Weird(Exception):
        def __str__(self):
            raise RuntimeError("no")

    def broken(context):
        raise Weird

    with pytest.raises(ConditionEvaluationError, match="Weird"):
        compile_condition(broken)({})


@pytest.mark.parametrize("value", [None, 42, 1.5, b"True", ["True"], {"a": 1}])
def test_non_string_non_callable_is_rejected(value):
    with pytest.raises(ConditionError, match="string or a callable"):
        compile_condition(value)


# --- compile-time rejections ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os').system('id')", "dunder names are not allowed: '__import__'"),
        ("__builtins__", "dunder names are not allowed"),
        ("().__class__", "attribute access is not allowed: '.__class__'"),
        ("context.__class__", "attribute access is not allowed: '.__class__'"),
        ("context.get('a').upper()", "attribute access is not allowed: '.upper'"),
        ("context.items()", "attribute access is not allowed: '.items'"),
        ("open('/etc/passwd')", "function 'open' is not allowed"),
        ("eval('1')", "function 'eval' is not allowed"),
        ("getattr(context, 'get')", "function 'getattr' is not allowed"),
        ("[x for x in (1, 2)]", "comprehensions are not allowed"),
        ("{x: 1 for x in (1, 2)}", "comprehensions are not allowed"),
        ("any(x for x in (1, 2))", "generator expressions are not allowed"),
        ("lambda: 1", "lambda expressions are not allowed"),
        ("context", "'context' can only be used as context.get"),
        ("context['a']", "'context' can only be used as context.get"),
        ("context('a')", "'context' is not callable"),
        ("context.get", "context.get must be called"),
        ("context.get()", "context.get() takes a key and an optional default"),
        ("context.get('a', 1, 2)", "context.get() takes a key and an optional default"),
        ("context.get(*['a'])", "argument unpacking (*args) is not allowed"),
        ("context.get(**{'key': 'a'})", "argument unpacking (**kwargs) is not allowed"),
        ("context.get('a', default=1)", "keyword arguments are not allowed"),
        ("x", "name 'x' is not defined; use context.get('x')"),
        ("score >= 80", "name 'score' is not defined; use context.get('score')"),
        ("len", "function 'len' must be called"),
        ("len(context.get('a'))(1)", "only the whitelisted functions"),
        ("f'{1}'", "f-strings are not allowed"),
        ("(y := 1)", "assignment expressions"),
        ("[*context.get('a')]", "starred expressions"),
        ("{**context.get('a')}", "dict unpacking"),
        ("await context.get('a')", "await is not allowed"),
        ("~1", "operator ~ is not allowed"),
        ("1 << 2", "operator << is not allowed"),
        ("1 | 2", "operator | is not allowed"),
        ("1 @ 2", "operator @ is not allowed"),
        ("[1][0:1, 0]", "slices are only allowed directly inside"),
        ("b'x'", "constants of type bytes are not allowed"),
        ("1j", "constants of type complex are not allowed"),
        ("...", "constants of type ellipsis are not allowed"),
        ("1" * 1300, f"integer literal exceeds {MAX_INT_BITS} bits"),
        ("", "invalid syntax"),
        ("   ", "invalid syntax"),
        ("context.get('a') >=", "invalid syntax"),
        ("context.get('a') == 1; import os", "invalid syntax"),
        ("import os", "invalid syntax"),
        ("x = 1", "invalid syntax"),
        ("'unterminated", "invalid syntax"),
        ("1\x00", "null bytes"),
        ("'\ud800'", "cannot parse condition"),
    ],
)
def test_rejected_at_compile_time(source, message):
    with pytest.raises(ConditionError, match=re.escape(message)):
        compile_condition(source)


def test_rejection_message_quotes_the_source():
    with pytest.raises(ConditionError, match=r"in condition 'context\.__class__'"):
        compile_condition("context.__class__")


def test_functions_whitelist_is_read_only():
    assert set(FUNCTIONS) == {
        "abs",
        "all",
        "any",
        "bool",
        "float",
        "int",
        "len",
        "max",
        "min",
        "round",
        "sorted",
        "str",
        "sum",
    }
    with pytest.raises(TypeError):
        FUNCTIONS["open"] = open  # type: ignore[index]


# --- resource limits at compile time --------------------------------------------------------------


def test_source_length_limit():
    assert MAX_SOURCE_LENGTH == 2_000
    longest = "True" + " " * (MAX_SOURCE_LENGTH - 4)
    assert check(longest) is True
    with pytest.raises(ConditionError, match="too long"):
        compile_condition(longest + " ")


def test_depth_limit_boundary():
    assert MAX_DEPTH == 50
    # n unary minus signs put the constant at depth n + 1.
    assert check("-" * (MAX_DEPTH - 1) + "1") is True
    with pytest.raises(ConditionError, match="nested too deeply"):
        compile_condition("-" * MAX_DEPTH + "1")


@pytest.mark.parametrize(
    "source",
    [
        "(" * 100_000 + "1" + ")" * 100_000,
        "-" * 100_000 + "1",
        "(" * 1000 + "1" + ")" * 1000,
        "[" * 999 + "]" * 999,
        "-" * 1999 + "1",
        "not " * 499 + "1",
        "1" + " + 1" * 499,
        "context.get(" * 166 + "1" + ")" * 166,
        "1 if " * 400 + "1" + " else 1" * 400,
    ],
)
def test_hostile_nesting_is_rejected(source):
    with pytest.raises(ConditionError):
        compile_condition(source)


@pytest.mark.parametrize(
    "source",
    ["-" * 100_000 + "1", "not " * 50_000 + "1", "(" * 100_000 + "1" + ")" * 100_000],
)
def test_parser_failures_on_huge_input_become_condition_errors(monkeypatch, source):
    # Lift the length limit to reach ast.parse's own RecursionError/MemoryError/SyntaxError.
    monkeypatch.setattr(conditions, "MAX_SOURCE_LENGTH", 10**7)
    with pytest.raises(ConditionError):
        compile_condition(source)


# --- evaluation-time errors and limits ------------------------------------------------------------


def assert_fails_fast(source, context=None, match=None):
    """It fails quickly: at registration if it reads nothing from the context (it can
    only fail), else when evaluated."""
    start = time.perf_counter()
    if "context" not in source:
        with pytest.raises(ConditionError, match=match) as info:
            compile_condition(source)
    else:
        condition = compile_condition(source)
        with pytest.raises(ConditionEvaluationError, match=match) as info:
            condition(context if context is not None else {})
    assert time.perf_counter() - start < 1.0
    return info.value


def test_type_error_is_wrapped_with_the_source():
    error = assert_fails_fast("context.get('score') >= 80")
    assert "context.get('score') >= 80" in str(error)
    assert "TypeError" in str(error)
    assert isinstance(error.__cause__, TypeError)


@pytest.mark.parametrize(
    ("source", "context"),
    [
        ("1 / 0", {}),
        ("1 // 0 == 1", {}),
        ("1 % 0 == 1", {}),
        ("0 ** -1 == 1", {}),
        ("context.get('items')[5]", {"items": []}),
        ("context.get('d')['missing']", {"d": {}}),
        ("context.get('d')[[1]]", {"d": {}}),
        ("context.get([1])", {}),
        ("{[1]: 2}", {}),
        ("{[1]}", {}),
        ("int('x')", {}),
        ("int(float('inf'))", {}),
        ("int(float('nan'))", {}),
        ("1e300 ** 2 > 0", {}),
        ("max()", {}),
        ("sorted([1, 'a'])", {}),
        ("len(1)", {}),
        ("'a' + 1", {}),
        ("'abc'[10 ** 30]", {}),
        ("float(context.get('n')) > 0", {"n": 10**400}),
        ("context.get('a') == 1", []),  # no .get at all
        ("str(context.get('n'))", {"n": 10**5000}),  # int-to-str digit limit
    ],
)
def test_evaluation_errors_are_wrapped(source, context):
    assert_fails_fast(source, context)


@pytest.mark.parametrize(
    ("source", "context", "match"),
    [
        ("10 ** 10 ** 10", {}, "exponent"),
        ("2 ** 101", {}, "exponent"),
        ("2 ** -101", {}, "exponent"),
        ("2.0 ** 100.5", {}, "exponent"),
        ("(2 ** 100) ** 41", {}, "bits"),
        ("context.get('n') ** 2", {"n": 2**3000}, "bits"),
        ("context.get('n') * context.get('n')", {"n": 2**3000}, "bits"),
        ("context.get('n') + context.get('n')", {"n": 2**4096 - 1}, "bits"),
        ("int('9' * 1300)", {}, "bits"),
        ("'a' * 10 ** 9", {}, "repetition"),
        ("10 ** 9 * 'a'", {}, "repetition"),
        ("[0] * 10 ** 9", {}, "repetition"),
        ("(0,) * 10001", {}, "repetition"),
        ("'a' * 10001", {}, "repetition"),
        ("[[0] * 100] * 100", {}, "repetition"),
        ("len(str([[0] * 10000] * 10000))", {}, "repetition"),
        ("[context.get('xs')] * 2", {"xs": list(range(6000))}, "repetition"),
        ("'%999999999d' % 1", {}, "string formatting"),
        ("context.get('fmt') % 1", {"fmt": "%s"}, "string formatting"),
        ("round(5, -10 ** 9)", {}, "ndigits"),
        ("sum([[0]] * 5000, [])", {}, "start must be a number"),
    ],
)
def test_resource_limits(source, context, match):
    assert_fails_fast(source, context, match=match)


def test_limits_allow_values_up_to_the_bound():
    assert MAX_EXPONENT == 100
    assert MAX_INT_BITS == 4_096
    assert MAX_SEQUENCE_LENGTH == 10_000
    assert check("2 ** 100 > 0 and (-2) ** 100 > 0 and 1.5 ** -100 > 0") is True
    assert check("len('a' * 10000) == 10000 and len([0] * 10000) == 10000") is True
    assert check("len([[0] * 99] * 100) == 100") is True
    assert check("round(1234, -3) == 1000") is True


def test_int_bit_limit_is_exact():
    largest = {"n": 2**MAX_INT_BITS - 1}
    assert check("context.get('n') * 1 > 0", largest) is True
    assert check("context.get('n') + 0 > 0", largest) is True
    assert check("(2 ** 64) ** 63 * 2 ** 63 > 0") is True  # 2 ** 4095: 4096 bits
    assert_fails_fast("context.get('n') * 2", largest, match="bits")
    assert_fails_fast("context.get('n') + 1", largest, match="bits")
    assert_fails_fast("(2 ** 64) ** 64", match="bits")  # 2 ** 4096: 4097 bits


def test_deeply_nested_context_value_is_handled():
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    assert_fails_fast("[context.get('n')] * 2 == []", {"n": nested})


def test_cyclic_context_value_is_handled():
    cyclic: list = []
    cyclic.append(cyclic)
    assert_fails_fast("[context.get('c')] * 2", {"c": cyclic}, match="repetition")


def test_recursion_error_during_evaluation_is_wrapped():
    def deep():
        nested: list = []
        for _ in range(100_000):
            nested = [nested]
        return nested

    # Two distinct structures, so == has to recurse all the way down.
    error = assert_fails_fast("context.get('a') == context.get('b')", {"a": deep(), "b": deep()})
    assert isinstance(error.__cause__, RecursionError)


# --- property-based tests -------------------------------------------------------------------------

KEYS = ["a", "b", "score", "items", "approved"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)
contexts = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)

PYTHONISH = "context.get()[]{}'\"0123456789+-*/%<>=!&|~^@:;,._ \n\\abcdefijnorstxy"


def assert_bool_or_evaluation_error(condition, context):
    start = time.perf_counter()
    try:
        result = condition(context)
    except ConditionEvaluationError:
        pass
    else:
        assert isinstance(result, bool)
    assert time.perf_counter() - start < 2.0


@settings(max_examples=200, deadline=None)
@given(source=st.text() | st.text(alphabet=PYTHONISH, max_size=60), context=contexts)
def test_arbitrary_text_never_escapes(source, context):
    try:
        condition = compile_condition(source)
    except ConditionError:
        return
    assert isinstance(condition, Condition)
    assert_bool_or_evaluation_error(condition, context)


BINARY = ["+", "-", "*", "/", "//", "%", "**"]
COMPARE = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "is not"]

leaves = st.one_of(
    st.integers(min_value=-1000, max_value=1000).map(repr),
    st.integers().map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=6).map(repr),
    st.sampled_from(["True", "False", "None", "10000", "4096", "100", "101"]),
    st.sampled_from(KEYS).map(lambda key: f"context.get({key!r})"),
)


def _join(items):
    return ", ".join(items)


def _slice(parts):
    value, lower, upper, step = parts
    return f"{value}[{lower or ''}:{upper or ''}{':' + step if step else ''}]"


def grammar(children):
    optional = st.none() | children
    return st.one_of(
        st.tuples(children, st.sampled_from(BINARY), children).map(lambda t: f"({' '.join(t)})"),
        st.tuples(children, st.sampled_from(COMPARE), children).map(lambda t: f"({' '.join(t)})"),
        st.lists(st.tuples(st.sampled_from(COMPARE), children), min_size=2, max_size=3).map(
            lambda pairs: "(1" + "".join(f" {op} {c}" for op, c in pairs) + ")"
        ),
        st.tuples(children, st.sampled_from(["and", "or"]), children).map(
            lambda t: f"({' '.join(t)})"
        ),
        st.tuples(st.sampled_from(["not ", "-", "+"]), children).map(lambda t: f"({''.join(t)})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.lists(children, max_size=3).map(lambda xs: f"[{_join(xs)}]"),
        st.lists(children, max_size=3).map(lambda xs: f"({_join(xs)},)" if xs else "()"),
        st.lists(children, min_size=1, max_size=3).map(lambda xs: f"{{{_join(xs)}}}"),
        st.lists(st.tuples(children, children), max_size=3).map(
            lambda kvs: "{" + _join(f"{k}: {v}" for k, v in kvs) + "}"
        ),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(children, optional, optional, optional).map(_slice),
        st.tuples(st.sampled_from(sorted(FUNCTIONS)), st.lists(children, max_size=3)).map(
            lambda t: f"{t[0]}({_join(t[1])})"
        ),
        st.tuples(children, children).map(lambda t: f"context.get({t[0]}, {t[1]})"),
    )


expressions = st.recursive(leaves, grammar, max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=expressions, context_list=st.lists(contexts, min_size=1, max_size=3))
@example(source="context.get([], (('' and 0) % 0))", context_list=[{}])  # found by Hypothesis
def test_well_formed_expressions_never_escape(source, context_list):
    try:
        condition = compile_condition(source)
    except ConditionError as exc:
        error = str(exc)
    else:
        error = None
    if error is not None:
        # The grammar only produces allowed syntax; only size limits, or a part that reads
        # no context and can only fail, may reject it.
        assert (
            any(
                reason in error
                for reason in (
                    "too deeply",
                    "too long",
                    "exceed",
                    "always fails",
                    "exceeds",
                    # a constant string on the left of %: ('' and 0) % 0
                    "string formatting with % is not allowed",
                )
            )
            or "context" not in source
        ), error
        return
    assert condition.source == source
    for context in context_list:
        assert_bool_or_evaluation_error(condition, context)
