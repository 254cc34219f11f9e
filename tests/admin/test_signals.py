"""External signals in the admin: the read-only list (scoped, filtered), the instance
page's section, and the graph's signal step."""

import re
from datetime import timedelta

import pytest

from django_workflows import Edge, WaitForSignal, WorkflowDefinition
from django_workflows.admin.diagram import render_svg
from django_workflows.models import StepRun, WorkflowSignal

from ..factories import StaffFactory
from ..workflows import Record
from .conftest import grant

pytestmark = pytest.mark.django_db

LIST = "/admin/django_workflows/workflowsignal/"


def order():
    return WorkflowDefinition(
        name="order",
        version="1",
        initial_step="paid",
        steps={"paid": WaitForSignal("payment_received"), "ship": Record()},
        edges=[Edge("paid", "ship")],
    )


@pytest.fixture
def orders(admin_engine):
    admin_engine.registry.register_definition(order())
    starter = StaffFactory(username="starter")
    done = admin_engine.start_workflow("order", business_key="o-1", started_by=starter)
    admin_engine.send_signal("refund_requested", instance_id=done.pk)  # discarded at the end
    admin_engine.send_signal("payment_received", {"amount": 4}, instance_id=done.pk)
    waiting = admin_engine.start_workflow("order", business_key="o-2", started_by=starter)
    admin_engine.send_signal("address_changed", {"city": "Lyon"}, instance_id=waiting.pk)
    return starter, done, waiting


def rows(page):
    """The signal names in the list's rows."""
    text = page if isinstance(page, str) else page.content.decode()
    return set(re.findall(r'<td class="field-name">([^<]*)</td>', text))


def test_the_list_shows_the_signals_of_the_instances_one_sees(client, orders):
    starter, _, _ = orders
    client.force_login(starter)
    page = client.get(LIST).content.decode()
    assert rows(page) == {"payment_received", "refund_requested", "address_changed"}
    assert "dwf-badge-pending" in page and "dwf-badge-discarded" in page

    assert rows(client.get(LIST, {"state": "pending"})) == {"address_changed"}
    assert rows(client.get(LIST, {"state": "consumed"})) == {"payment_received"}
    assert rows(client.get(LIST, {"state": "discarded"})) == {"refund_requested"}
    assert rows(client.get(LIST, {"name": "refund_requested"})) == {"refund_requested"}

    client.force_login(StaffFactory(username="someone"))  # staff sees nothing of others'
    page = client.get(LIST).content.decode()
    assert rows(page) == set()
    assert "address_changed" not in page  # not even as a filter choice


def test_a_signal_page_is_read_only_and_refused_to_who_cannot_see_it(client, orders):
    starter, _, waiting = orders
    signal = WorkflowSignal.objects.get(name="address_changed")
    url = f"{LIST}{signal.pk}/change/"
    client.force_login(starter)
    page = client.get(url)
    assert page.status_code == 200
    assert b"Lyon" in page.content
    assert b'name="_save"' not in page.content  # nothing to save: read-only
    assert client.get(f"{LIST}add/").status_code == 403
    assert client.post(f"{LIST}{signal.pk}/delete/").status_code == 403
    client.force_login(StaffFactory(username="someone"))
    assert client.get(url).status_code in (302, 403)
    viewer = grant(StaffFactory(username="viewer"), "view_workflowinstance")
    client.force_login(viewer)
    assert client.get(url).status_code == 200
    assert WorkflowSignal.objects.filter(instance=waiting).count() == 1


def test_the_instance_page_lists_its_signals(client, orders):
    starter, done, waiting = orders
    client.force_login(starter)
    page = client.get(f"/admin/django_workflows/workflowinstance/{done.pk}/change/")
    text = page.content.decode()
    assert 'id="dwf-signals"' in text
    assert "payment_received" in text and "refund_requested" in text
    assert "dwf-signal-consumed" in text and "dwf-signal-discarded" in text
    page = client.get(f"/admin/django_workflows/workflowinstance/{waiting.pk}/change/")
    text = page.content.decode()
    assert "dwf-signal-pending" in text and "&quot;city&quot;: &quot;Lyon&quot;" in text
    # The graph draws the wait as a signal step with its name.
    assert 'class="dwf-step dwf-step-signal' in text and "signal: payment_received" in text


def test_the_graph_draws_a_signal_step_with_an_envelope_and_escapes_its_name():
    graph = WorkflowDefinition(
        name="g",
        version="1",
        initial_step="wait",
        steps={"wait": WaitForSignal("<paid>"), "after": Record()},
        edges=[Edge("wait", "after")],
    ).graph()
    svg = str(render_svg(graph, {"wait": "current"}, set()))
    assert 'data-step="wait"' in svg and "dwf-step-signal" in svg
    assert 'class="dwf-signal-icon"' in svg
    assert "signal: &lt;paid&gt;" in svg and "<paid>" not in svg


def test_big_signal_data_is_cut_in_the_lists_and_whole_on_its_page(client, admin_engine):
    # A signal may carry up to MAX_CONTEXT_BYTES; a list row or the instance page showing
    # it all was megabytes wide.
    admin_engine.registry.register_definition(order())
    starter = StaffFactory(username="starter")
    instance = admin_engine.start_workflow("order", started_by=starter)
    blob = "x" * 200_000
    signal, _ = admin_engine.send_signal("bulky", {"blob": blob}, instance_id=instance.pk)
    client.force_login(starter)
    for url in (LIST, f"/admin/django_workflows/workflowinstance/{instance.pk}/change/"):
        page = client.get(url).content.decode()
        assert "bulky" in page
        assert "x" * 1001 not in page  # cut, its tooltip too
        assert "blob&quot;: &quot;" + "x" * 50 in page  # the start of it
    page = client.get(f"{LIST}{signal.pk}/change/").content.decode()
    assert blob in page


def test_a_signal_waits_own_timeout_shows_on_the_instance_page(client, admin_engine):
    admin_engine.registry.register_definition(
        WorkflowDefinition(
            name="paid_in_time",
            version="1",
            initial_step="paid",
            steps={"paid": WaitForSignal("paid", timeout=timedelta(days=3)), "ship": Record()},
            edges=[Edge("paid", "ship")],
        )
    )
    starter = StaffFactory(username="starter")
    instance = admin_engine.start_workflow("paid_in_time", started_by=starter)
    client.force_login(starter)
    html = client.get(f"/admin/django_workflows/workflowinstance/{instance.pk}/change/")
    due_at = StepRun.objects.get(instance=instance).due_at
    assert f"&#x25f7; times out {due_at:%Y-%m-%d %H:%M}</small>" in html.content.decode()


def test_the_admin_discards_selected_pending_signals_by_the_signal_rule(client, orders):
    starter, _done, waiting = orders
    pending = WorkflowSignal.objects.get(name="address_changed")
    consumed = WorkflowSignal.objects.get(name="payment_received")
    stranger = StaffFactory(username="stranger")
    grant(stranger, "view_workflowinstance", "view_workflowsignal")
    client.force_login(stranger)
    action = {"action": "discard_pending", "_selected_action": [pending.pk]}
    page = client.post(LIST, action, follow=True)
    assert "may not discard signal" in page.content.decode()
    pending.refresh_from_db()
    assert pending.discarded_at is None  # refused: nothing changed

    client.force_login(starter)  # who may manage the instance may discard its signals
    page = client.post(
        LIST,
        {"action": "discard_pending", "_selected_action": [pending.pk, consumed.pk]},
        follow=True,
    )
    text = page.content.decode()
    assert "1 signal(s) discarded." in text
    assert f"#{consumed.pk}: signal {consumed.pk} is consumed" in text
    pending.refresh_from_db()
    assert pending.discarded_at is not None
    event = waiting.events.get(type="SignalDiscarded")
    assert event.payload["user_id"] == starter.pk
    assert event.payload["reason"] == "discarded in the admin"
