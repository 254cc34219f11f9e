"""WorkflowRegistry: versions, lookups, re-registration; the project registry and lazy names."""

import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import django_workflows
from django_workflows import (
    DefinitionError,
    Edge,
    WorkflowDefinition,
    WorkflowNotFound,
    WorkflowRegistry,
)
from django_workflows.registry import version_key

from .workflows import Record


def definition(name="flow", version="1.0.0", description="", target="b"):
    return WorkflowDefinition(
        name=name,
        version=version,
        description=description,
        initial_step="a",
        steps={"a": Record(), target: Record()},
        edges=[Edge("a", target)],
    )


@pytest.fixture
def reg():
    return WorkflowRegistry()


def test_register_and_get(reg):
    flow = definition()

    assert reg.register_definition(flow) is flow
    assert reg.get_definition("flow") is flow
    assert reg.get_definition("flow", "1.0.0") is flow
    assert reg.get_definition("flow", version="1.0.0") is flow


@pytest.mark.parametrize(
    ("versions", "highest"),
    [
        (["1.9.0", "1.10.0", "1.2.0"], "1.10.0"),
        (["2", "10", "9"], "10"),
        (["1.0", "1.0.1", "0.9.9"], "1.0.1"),
        (["1.9.2", "1.10"], "1.10"),
        (["2024.12.1", "2025.1.0"], "2025.1.0"),
        # A release ranks above its pre-releases.
        (["2.0.0-rc1", "2.0.0", "1.9.0"], "2.0.0"),
        (["2.0.0b1", "2.0.0", "2.0.0rc1"], "2.0.0"),
        (["2.0.0-rc.2", "2.0.0-rc.10", "1.0.0"], "2.0.0-rc.10"),
    ],
)
def test_get_without_version_is_the_highest_in_natural_order(reg, versions, highest):
    for version in versions:
        reg.register_definition(definition(version=version))

    assert reg.get_definition("flow").version == highest
    # Registration order does not matter.
    other = WorkflowRegistry()
    for version in reversed(versions):
        other.register_definition(definition(version=version))
    assert other.get_definition("flow").version == highest


def test_version_key_orders_naturally():
    ordered = [
        "0.9",
        "1.0.0-alpha",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.2.0",
        "1.9",
        "1.9.0",
        "1.9.2",
        "1.10.0",
        "10.0",
    ]
    for seed in range(5):
        shuffled = random.Random(seed).sample(ordered, len(ordered))
        assert sorted(shuffled, key=version_key) == ordered
    assert version_key("1.0.0rc1")[0] == version_key("1.0.0-rc1")[0]
    # Versions that only differ in punctuation still order one way, not by dict order.
    assert sorted(["1-0", "1.0"], key=version_key) == sorted(["1.0", "1-0"], key=version_key)


def test_list_definitions_latest_per_name_or_all_versions(reg):
    for name, version in [
        ("orders", "1.10.0"),
        ("expenses", "2.0.0"),
        ("orders", "1.9.0"),
        ("expenses", "1.0.0"),
        ("orders", "1.0.0"),
    ]:
        reg.register_definition(definition(name=name, version=version))

    assert [str(d) for d in reg.list_definitions()] == ["expenses 2.0.0", "orders 1.10.0"]
    assert [str(d) for d in reg.list_definitions(all_versions=True)] == [
        "expenses 1.0.0",
        "expenses 2.0.0",
        "orders 1.0.0",
        "orders 1.9.0",
        "orders 1.10.0",
    ]
    assert len(reg) == 5


def test_list_definitions_of_an_empty_registry(reg):
    assert reg.list_definitions() == []
    assert reg.list_definitions(all_versions=True) == []
    assert len(reg) == 0


def test_has_definition(reg):
    reg.register_definition(definition(version="1.0.0"))

    assert reg.has_definition("flow")
    assert reg.has_definition("flow", "1.0.0")
    assert not reg.has_definition("flow", "2.0.0")
    assert not reg.has_definition("other")
    assert not reg.has_definition("other", "1.0.0")
    assert "flow" in reg
    assert "other" not in reg


def test_registering_the_same_definition_again_is_a_no_op(reg):
    flow = definition()
    reg.register_definition(flow)

    assert reg.register_definition(flow) is flow
    assert len(reg) == 1


def test_registering_an_equal_graph_again_keeps_the_first(reg):
    # e.g. a workflows.py module imported twice: a new object with the same graph.
    first = reg.register_definition(definition(description="first"))
    again = definition(description="only the description differs")

    assert reg.register_definition(again) is first
    assert reg.get_definition("flow") is first
    assert len(reg) == 1


def test_same_version_with_a_different_graph_is_refused(reg):
    first = reg.register_definition(definition())
    changed = definition(target="c")

    with pytest.raises(DefinitionError) as excinfo:
        reg.register_definition(changed)

    message = str(excinfo.value)
    assert "workflow flow 1.0.0 is already registered with a different graph" in message
    assert "new version" in message
    assert reg.get_definition("flow", "1.0.0") is first
    # Under a new version it is welcome.
    assert reg.register_definition(definition(version="1.1.0", target="c")).version == "1.1.0"
    assert reg.get_definition("flow").version == "1.1.0"


def test_an_invalid_definition_is_not_registered(reg):
    broken = WorkflowDefinition(
        name="broken", version="1", initial_step="missing", steps={"a": Record()}
    )
    with pytest.raises(DefinitionError, match="initial step 'missing' does not exist"):
        reg.register_definition(broken)
    assert not reg.has_definition("broken")
    assert reg.list_definitions() == []


def test_unknown_name_or_version_raises_workflow_not_found(reg):
    reg.register_definition(definition(version="1.10.0"))
    reg.register_definition(definition(version="1.9.0"))

    with pytest.raises(WorkflowNotFound, match=re.escape("no workflow named 'nope' is registered")):
        reg.get_definition("nope")
    with pytest.raises(WorkflowNotFound, match=re.escape("no workflow named 'nope' is registered")):
        reg.get_definition("nope", "1.0.0")
    with pytest.raises(
        WorkflowNotFound,
        match=re.escape("workflow 'flow' has no version '2.0' (registered: 1.9.0, 1.10.0)"),
    ):
        reg.get_definition("flow", "2.0")


def test_workflow_not_found_is_a_lookup_error():
    assert issubclass(WorkflowNotFound, LookupError)


def test_unregister_a_version_or_a_name(reg):
    reg.register_definition(definition(version="1.0.0"))
    reg.register_definition(definition(version="2.0.0"))

    reg.unregister("flow", "2.0.0")
    assert reg.get_definition("flow").version == "1.0.0"
    assert not reg.has_definition("flow", "2.0.0")

    reg.unregister("flow", "1.0.0")  # the last version: the name is gone too
    assert not reg.has_definition("flow")
    assert reg.list_definitions(all_versions=True) == []
    with pytest.raises(WorkflowNotFound, match="no workflow named 'flow'"):
        reg.get_definition("flow")

    reg.register_definition(definition(version="3.0.0"))
    reg.unregister("flow")
    assert "flow" not in reg
    reg.unregister("never-registered")  # harmless
    reg.unregister("never-registered", "1.0.0")


def test_registries_are_independent(reg):
    reg.register_definition(definition())
    assert not WorkflowRegistry().has_definition("flow")


# -- the project registry and the package's public names ---------------------------------


def test_project_registry_holds_the_autodiscovered_demo_workflows():
    from django_workflows import registry
    from testproject.demo import workflows as demo

    assert isinstance(registry, WorkflowRegistry)
    assert registry.get_definition("expense_approval") is demo.expense_approval
    assert registry.get_definition("order_fulfillment", "1.0.0") is demo.order_fulfillment
    names = {d.name for d in registry.list_definitions()}
    assert {"expense_approval", "order_fulfillment"} <= names


def test_from_the_package_registry_is_the_instance_not_the_submodule():
    from django_workflows import registry

    module = sys.modules["django_workflows.registry"]
    assert type(module).__name__ == "module"
    assert registry is module.registry
    assert django_workflows.registry is module.registry
    assert django_workflows.WorkflowRegistry is module.WorkflowRegistry


def test_lazy_public_names_import():
    from django_workflows import LocalExecutionEngine, WorkflowStatus, get_engine
    from django_workflows.engine import LocalExecutionEngine as engine_class
    from django_workflows.engine import get_engine as engine_getter
    from django_workflows.models import WorkflowStatus as status_class

    assert LocalExecutionEngine is engine_class
    assert get_engine is engine_getter
    assert WorkflowStatus is status_class
    for name in django_workflows.__all__:
        assert getattr(django_workflows, name) is not None, name


def test_unknown_package_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        django_workflows.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        from django_workflows import NoSuchThing  # noqa: F401


def test_definitions_can_be_declared_before_django_is_set_up():
    """The definition layer imports no models: a workflows module works before setup()."""
    code = textwrap.dedent(
        """
        import sys
        from django_workflows import (
            BaseMachineStep, Edge, WorkflowDefinition, WorkflowRegistry, registry,
        )

        class Step(BaseMachineStep):
            def execute(self, context):
                pass

        reg = WorkflowRegistry()
        reg.register_definition(WorkflowDefinition(
            name="w", version="1", initial_step="a",
            steps={"a": Step(), "b": Step()},
            edges=[Edge("a", "b", condition="context.get('x') == 1")],
        ))
        assert isinstance(registry, WorkflowRegistry)
        loaded = [m for m in ("django_workflows.models", "django_workflows.engine") if m in sys.modules]
        assert not loaded, loaded
        print("ok", reg.get_definition("w").checksum[:8])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
