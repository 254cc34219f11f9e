"""Random workflow definitions: registration accepts them or raises DefinitionError, and
what registers runs on the local engine to a terminal or WAITING state, consistently.

Graphs: machine, human, gateway and timer steps, edges between them (unknown names,
self-loops, cycles included) with conditions from a small grammar, hostile strings and
callables. Runs: machine steps set random JSON values (and fail once they have run too
often, which ends runaway loops), human tasks are completed with random data, due timers
are fired by moving their due time into the past and sweeping; some instances are
canceled or retried along the way.

Names (of workflows, versions, steps) and context values that the database may not store
are tried one by one at the end (explicit cases, so that the bugs they found stay covered
on every run); the random data above leaves NUL out for that reason.
"""

import itertools
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    ContextError,
    DefinitionError,
    Edge,
    ExclusiveGateway,
    LocalExecutionEngine,
    ParallelGateway,
    TimerStep,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.models import HumanTask, StepRun, WorkflowEvent, WorkflowInstance

pytestmark = [pytest.mark.reliability, pytest.mark.django_db]

NAMES = ["a", "b", "c", "d", "e", "f"]
UNKNOWN = ["zz", "", "A", " a"]
KEYS = ["x", "approved", "score"]
#: Machine steps of one instance fail once they ran this often (ends endless loops).
EXECUTION_BUDGET = 25
#: Rounds of completing tasks and firing timers before a looping instance is left WAITING.
ROUNDS = 12
#: Tasks completed, and timers fired, a round: a loop through a parallel split doubles them.
TASKS_A_ROUND = 4
TERMINAL = {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED}
ACTIVE_RUNS = ("queued", "running", "waiting", "scheduled")

_names = itertools.count()

# -- steps --------------------------------------------------------------------------------


class Budget(Exception):
    pass


class Machine(BaseMachineStep):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def execute(self, context):
        n = context.get("n", 0) + 1
        if n > EXECUTION_BUDGET:
            raise Budget("execution budget spent")
        context.set("n", n)
        context.update(self.values)


class Human(BaseHumanStep):
    title = "Fuzz"
    fields = KEYS  # the keys the fuzzed task data may set, already in the context or not


# -- strategies ---------------------------------------------------------------------------

# NUL is left out: the context refuses it (PostgreSQL cannot store it in JSON), which
# test_values_the_database_cannot_store_* check; here it would only fail the examples.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
data = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3)

atoms = st.sampled_from(
    [
        "context.get('x')",
        "context.get('approved')",
        "context.get('score', 0)",
        "context.get('n', 0)",
        "0",
        "1",
        "-3",
        "2.5",
        "True",
        "None",
        "'s'",
        "''",
        "[1, 2]",
        "{'k': 1}",
        "(1,)",
    ]
)


def _combine(inner):
    unary = st.tuples(st.sampled_from(["not {}", "-({})", "len({})", "abs({})", "str({})"]), inner)
    binary = st.tuples(
        st.sampled_from(
            [
                "{} == {}",
                "{} != {}",
                "{} < {}",
                "{} >= {}",
                "{} and {}",
                "{} or {}",
                "({}) + ({})",
                "({}) * ({})",
                "({}) / ({})",
                "({}) % ({})",
                "({}) ** ({})",
                "{} in {}",
                "({})[{}]",
                "max({}, {})",
            ]
        ),
        inner,
        inner,
    )
    ternary = st.tuples(st.just("{} if {} else {}"), inner, inner, inner)
    return st.one_of(unary, binary, ternary).map(lambda t: t[0].format(*t[1:]))


grammar = st.recursive(atoms, _combine, max_leaves=8)

HOSTILE = [
    "__import__('os').system('true')",
    "().__class__.__bases__[0].__subclasses__()",
    "context.__dict__",
    "context",
    "context.get",
    "open('/etc/passwd').read()",
    "eval('1')",
    "lambda: 1",
    "[x for x in (1, 2)]",
    "(y := 1)",
    "f'{1}'",
    "9 ** 9 ** 9",
    "'a' * 10 ** 9",
    "[[0] * 10000] * 10000",
    "round(1, -1000)",
    "'%999999999d' % 1",
    "sum([[1]], [])",
    "10 ** 10000",
    "(" * 300 + "1" + ")" * 300,
    "-" * 5000 + "1",
    "1 +",
    "",
    "   ",
    "\x00",
    "'\ud800'",
    "1" * 5000,
    "context.get('x').upper()",
    "sorted(context.get('x'))",
    "context.get(context.get('x'))",
    "1 / 0",
    "{}[1]",
    "max()",
    "int('nope')",
    "a.b",
    "yield 1",
    "await x",
    "*a",
    "1; 2",
    "import os",
]


def _raises(context):
    raise ZeroDivisionError("a callable condition failed")


class _BadBool:
    def __bool__(self):
        raise ValueError("no truth value")


CALLABLES = [
    lambda context: True,
    lambda context: False,
    lambda context: context.get("approved"),
    _raises,
    lambda context: _BadBool(),
]

conditions = st.one_of(
    st.none(),
    st.none(),
    grammar,
    st.sampled_from(HOSTILE),
    st.text(max_size=20),
    st.sampled_from(CALLABLES),
    st.integers(),  # not a condition at all
)
step_names = st.sampled_from(NAMES)
edge_ends = st.one_of(step_names, step_names, step_names, st.sampled_from(UNKNOWN))


@st.composite
def steps(draw):
    kind = draw(st.sampled_from(["machine", "machine", "human", "exclusive", "parallel", "timer"]))
    if kind == "machine":
        return Machine(draw(data))
    if kind == "human":
        return Human()
    if kind == "exclusive":
        return ExclusiveGateway()  # its default is drawn once the edges are known
    if kind == "parallel":
        return ParallelGateway()
    seconds = draw(st.integers(-3600, 86400))
    return TimerStep(None if seconds % 10 == 7 else timedelta(seconds=seconds))


tame_conditions = st.one_of(
    st.none(), st.none(), st.none(), grammar, grammar, st.sampled_from(CALLABLES)
)


@st.composite
def definitions(draw):
    """Mostly graphs that can register: a random tree from the initial step, extra edges
    (back edges and self-loops make cycles), tame conditions; and now and then something
    wild: unknown names, hostile or random conditions, duplicate edges, a bad default."""
    names = draw(st.lists(step_names, min_size=1, max_size=6, unique=True))
    graph = {name: draw(steps()) for name in names}
    wild = draw(st.integers(0, 4)) == 0
    ends = edge_ends if wild else st.sampled_from(names)
    pairs = [(names[draw(st.integers(0, i - 1))], names[i]) for i in range(1, len(names))]
    pairs += draw(st.lists(st.tuples(ends, ends), max_size=4))
    if not wild:
        pairs = list(dict.fromkeys(pairs))  # no duplicate edges
    edges = []
    for source, target in pairs:
        condition = draw(conditions if wild else tame_conditions)
        if not wild and isinstance(graph.get(source), ParallelGateway):
            condition = None
        edges.append(Edge(source, target, condition))
    for name, step in graph.items():
        if isinstance(step, ExclusiveGateway):
            targets = [edge.target for edge in edges if edge.source == name]
            choices = st.none() | st.sampled_from(targets) if targets else st.none()
            step.default = draw(choices | edge_ends if wild else choices)
    initial = draw(st.sampled_from(names) | st.sampled_from(UNKNOWN)) if wild else names[0]
    return WorkflowDefinition(
        name=f"fuzz{next(_names)}", version="1", initial_step=initial, steps=graph, edges=edges
    )


# -- the tests ----------------------------------------------------------------------------


def register(definition, *, record=False):
    """Register in a registry of its own: None if refused with a DefinitionError."""
    registry = WorkflowRegistry()
    try:
        registry.register_definition(definition)
    except DefinitionError as exc:
        if record:
            event(f"refused: {str(exc).partition(': ')[2][:30]}")
        return None
    return registry


@settings(max_examples=400, deadline=None)
@given(definitions())
def test_registration_accepts_or_raises_definition_error(definition):
    register(definition)  # any other exception fails the test


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(
    definition=definitions(),
    task_data=st.lists(data, min_size=1, max_size=4),
    moves=st.lists(st.sampled_from(["go"] * 6 + ["cancel", "retry"]), max_size=ROUNDS),
)
def test_registered_definitions_run_to_a_consistent_state(definition, task_data, moves):
    """Also cancels the instance, or retries it once failed, when ``moves`` says so."""
    registry = register(definition, record=True)
    event(f"registered: {registry is not None}")
    if registry is None:
        return
    engine = LocalExecutionEngine(registry)
    instance = engine.start_workflow(definition.name, initial_data={"x": 1})
    answers = itertools.cycle(task_data)
    moves = iter(moves)
    for _ in range(ROUNDS):
        instance = engine.get_instance(instance.pk)
        move = next(moves, "go")
        if move == "cancel" and instance.status != WorkflowStatus.COMPLETED:
            instance = engine.cancel_workflow(instance.pk, reason="fuzz")
        elif move == "retry" and instance.status == WorkflowStatus.FAILED:
            instance = engine.retry(instance.pk)
        if instance.status in TERMINAL:
            break
        acted = False
        for task in HumanTask.objects.filter(instance=instance, status="open")[:TASKS_A_ROUND]:
            instance = engine.complete_human_task(instance.pk, task.step_name, None, next(answers))
            acted = True
            if instance.status in TERMINAL:
                break
        timers = StepRun.objects.filter(instance=instance, status="scheduled")
        due = list(timers.values_list("pk", flat=True)[:TASKS_A_ROUND])
        if due:
            timers.filter(pk__in=due).update(due_at=timezone.now() - timedelta(seconds=1))
            engine.run_due_timers()
            acted = True
        assert acted or engine.get_instance(instance.pk).status in TERMINAL, (
            f"instance {engine.get_instance(instance.pk).status} with nothing to do: "
            f"{describe(instance)}"
        )
    instance = engine.get_instance(instance.pk)
    event(f"ended {instance.status} {instance.error.partition(':')[0]}")
    check_consistent(instance)
    if instance.error.startswith("RecursionError"):
        # Only a loop of gateways alone routes forever within one transition.
        assert gateway_cycle(definition), describe(instance)
    if instance.status == WorkflowStatus.WAITING:
        # Cancel what is left (the examples share one database, and the next one's sweep
        # must not find this one's timers), and check the canceled state too.
        check_consistent(engine.cancel_workflow(instance.pk, reason="example over"))


def gateway_cycle(definition) -> bool:
    """Whether some cycle of the graph goes through gateways only."""
    gateways = {
        n for n, s in definition.steps.items() if isinstance(s, ExclusiveGateway | ParallelGateway)
    }
    edges = {
        n: [e.target for e in definition.edges if e.source == n and e.target in gateways]
        for n in gateways
    }
    state: dict[str, int] = {}

    def visit(node) -> bool:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1 or (nxt not in state and visit(nxt)):
                return True
        state[node] = 2
        return False

    return any(node not in state and visit(node) for node in gateways)


def describe(instance):
    runs = list(StepRun.objects.filter(instance=instance).values_list("step_name", "status"))
    return f"runs {runs}, current {instance.current_steps}, error {instance.error[:300]!r}"


def check_consistent(instance):
    assert instance.status in TERMINAL | {WorkflowStatus.WAITING}, describe(instance)
    runs = StepRun.objects.filter(instance=instance)
    active = list(runs.filter(status__in=ACTIVE_RUNS).values_list("step_name", "status"))
    assert not [r for r in active if r[1] == "running"], describe(instance)
    # current_steps names exactly the active runs.
    assert Counter(instance.current_steps) == Counter(name for name, _ in active), describe(
        instance
    )
    # Each waiting run has its one open task, and each open task its waiting run.
    waiting = set(runs.filter(status="waiting").values_list("pk", flat=True))
    open_tasks = list(
        HumanTask.objects.filter(instance=instance, status="open").values_list(
            "step_run_id", flat=True
        )
    )
    assert sorted(open_tasks) == sorted(waiting), describe(instance)
    events = Counter(WorkflowEvent.objects.filter(instance=instance).values_list("type", flat=True))
    assert events["WorkflowStarted"] == 1
    assert events["WorkflowCompleted"] == (instance.status == WorkflowStatus.COMPLETED)
    if instance.status in (WorkflowStatus.COMPLETED, WorkflowStatus.CANCELED):
        assert not active, describe(instance)
        assert instance.finished_at is not None
    if instance.status == WorkflowStatus.FAILED:
        assert instance.error and instance.failed_step, describe(instance)
        assert instance.finished_at is not None
    if instance.status == WorkflowStatus.WAITING:
        assert active and {status for _, status in active} <= {"waiting", "scheduled"}, describe(
            instance
        )
    assert WorkflowInstance.objects.filter(pk=instance.pk).count() == 1


# -- names the database has to store ------------------------------------------------------

NAME_CASES = {
    "nul": "a\x00b",
    "surrogate": "a\ud800b",
    "long": "s" * 201,
    "empty": "",
    "blank": " ",
    "newline": "a\nb",
    "quotes": "a'b\"c",
    "unicode": "名前é",
    "markup": "<script>alert(1)</script>",
}


def name_cases():
    for case in NAME_CASES:
        for what in ("step", "workflow", "version"):
            yield pytest.param(case, what, id=f"{case}-{what}")


@pytest.mark.parametrize(("case", "what"), list(name_cases()))
def test_names_register_or_refuse_and_then_run(case, what):
    """A name is refused at registration, or the workflow runs: never a database error
    from the first start."""
    name = NAME_CASES[case]
    step = name if what == "step" else "s"
    definition = WorkflowDefinition(
        name=name if what == "workflow" else f"fuzz{next(_names)}",
        version=name if what == "version" else "1",
        initial_step=step,
        steps={step: Machine({})},
    )
    registry = register(definition)
    if registry is None:
        return
    engine = LocalExecutionEngine(registry)
    instance = engine.start_workflow(definition.name, definition.version)
    assert instance.status == WorkflowStatus.COMPLETED
    assert StepRun.objects.get(instance=instance).step_name == step


# -- values the database has to store ------------------------------------------------------

NUL_VALUES = [pytest.param("a\x00b", id="value"), pytest.param({"a\x00b": 1}, id="key")]


@pytest.mark.parametrize("value", NUL_VALUES)
def test_values_the_database_cannot_store_in_initial_data(value):
    """Refused with a ContextError on every database, not a DataError on PostgreSQL."""
    registry = register(
        WorkflowDefinition(
            name="nul_start", version="1", initial_step="s", steps={"s": Machine({})}
        )
    )
    engine = LocalExecutionEngine(registry)
    with pytest.raises(ContextError, match="NUL"):
        engine.start_workflow("nul_start", initial_data={"x": value})
    assert not WorkflowInstance.objects.exists()


@pytest.mark.parametrize("value", NUL_VALUES)
def test_values_the_database_cannot_store_in_task_data(value):
    registry = register(
        WorkflowDefinition(
            name="nul_task",
            version="1",
            initial_step="h",
            steps={"h": Human(), "s": Machine({})},
            edges=[Edge("h", "s")],
        )
    )
    engine = LocalExecutionEngine(registry)
    instance = engine.start_workflow("nul_task")
    with pytest.raises(ContextError, match="NUL"):
        engine.complete_human_task(instance.pk, "h", None, {"x": value})
    assert HumanTask.objects.get(instance=instance).status == "open"
    assert engine.get_instance(instance.pk).status == WorkflowStatus.WAITING


@pytest.mark.parametrize("value", NUL_VALUES)
def test_values_the_database_cannot_store_set_by_a_step(value):
    """The step fails with a clear message, like a step setting a non-JSON value."""
    registry = register(
        WorkflowDefinition(
            name="nul_step", version="1", initial_step="s", steps={"s": Machine({"x": value})}
        )
    )
    engine = LocalExecutionEngine(registry)
    instance = engine.start_workflow("nul_step")
    assert instance.status == WorkflowStatus.FAILED
    assert "ContextError" in instance.error and "NUL" in instance.error
    assert not StepRun.objects.filter(instance=instance, status="running").exists()
