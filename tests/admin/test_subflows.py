"""The admin: an instance page links its parent and its sub-workflows; the graph draws
a sub-workflow step as a double box with the child's name."""

import pytest
from django.urls import reverse

from django_workflows.admin.diagram import layout, render_svg
from testproject.testapp import subflow_workflows as sw

from ..factories import StaffFactory

pytestmark = pytest.mark.django_db


def change_url(instance):
    return reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk])


@pytest.fixture
def admin_client_(client):
    client.force_login(StaffFactory(is_superuser=True))
    return client


def test_parent_and_children_link_to_each_other(admin_engine, admin_client_):
    sw.register(admin_engine.registry)
    parent = admin_engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y"]})
    first, second = parent.children.order_by("parent_item")

    page = admin_client_.get(change_url(parent)).content.decode()
    assert "Sub-workflows" in page
    for child in (first, second):
        assert f'href="{change_url(child)}" class="dwf-child"' in page
    assert "item 1" in page and "step approve_lines" in page

    page = admin_client_.get(change_url(first)).content.decode()
    assert f'href="{change_url(parent)}" class="dwf-parent"' in page
    assert "(step approve_lines)" in page


def test_many_children_are_cut_with_a_link_to_all_of_them(admin_engine, admin_client_, monkeypatch):
    from django_workflows.admin import subflows

    monkeypatch.setattr(subflows, "CHILDREN_SHOWN", 2)
    sw.register(admin_engine.registry)
    parent = admin_engine.start_workflow("sub_approval", initial_data={"lines": ["x", "y", "z"]})

    page = admin_client_.get(change_url(parent)).content.decode()
    assert page.count('class="dwf-child"') == 2
    assert "All 3 sub-workflows" in page
    listing = reverse("admin:django_workflows_workflowinstance_changelist")
    url = f"{listing}?parent__id__exact={parent.pk}"
    assert f'href="{url}" class="dwf-all-children"' in page
    rows = admin_client_.get(url).content.decode()
    assert "3 results" in rows
    for child in parent.children.all():
        assert change_url(child) in rows


def test_an_instance_without_sub_workflows_has_no_such_section(admin_engine, admin_client_):
    sw.register(admin_engine.registry)
    instance = admin_engine.start_workflow(
        "sub_price", initial_data={"line": {"qty": 1, "price": 1}}
    )
    page = admin_client_.get(change_url(instance)).content.decode()
    assert "Sub-workflows" not in page


def test_the_graph_draws_a_sub_workflow_step_as_a_double_square_box():
    graph = sw.sub_order().graph()
    node = layout(graph).nodes["price_lines"]
    assert node.kind == "subworkflow"
    assert node.caption == "\u229e sub_price (each)"
    svg = render_svg(graph)
    group = svg.split('data-step="price_lines"')[1].split("</g>")[0]
    assert group.count("<rect") == 2  # a double border
    assert 'rx="0"' in group
    assert "\u229e sub_price" in group
    single = layout(sw.sub_single().graph()).nodes["price"]
    assert single.caption == "\u229e sub_price"
