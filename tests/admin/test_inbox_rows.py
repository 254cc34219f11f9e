"""The inbox's rows, rendered in Python (``inboxrows.py``): the same markup as the
template loop they replace (kept here, as it was), row for row."""

from datetime import timedelta

import pytest
from django.db import connection
from django.template import engines
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django.asserts import assertHTMLEqual

from django_workflows import taskpage
from django_workflows.inboxrows import group_names
from django_workflows.models import HumanTask, HumanTaskGroup

from ..factories import StaffFactory
from .conftest import grant

pytestmark = pytest.mark.django_db

#: The rows of ``includes/inbox_table.html`` before ``{% inbox_rows %}``.
TEMPLATE_ROWS = """{% load i18n dwf_links %}
    {% for task in tasks %}
      <tr class="dwf-task{% if task.overdue %} dwf-overdue{% endif %}" data-task="{{ task.pk }}">
        {% if urls.bulk %}<td class="dwf-select"><input type="checkbox" name="task" value="{{ task.pk }}" form="dwf-bulk-select" aria-label="{% translate 'Select' %} {{ task.title }}"></td>{% endif %}
        <td><a href="{% pk_url urls.task task.pk %}">{{ task.title }}</a></td>
        <td class="dwf-summary">{{ task.summary|default:"-" }}</td>
        <td>{% if urls.instance %}<a href="{% pk_url urls.instance task.instance_id %}">{% endif %}{{ task.instance.definition.name }} {{ task.instance.definition.version }} #{{ task.instance_id|stringformat:"s"|slice:":8" }}{% if urls.instance %}</a>{% endif %}
          {% if task.instance.business_key %}<div class="dwf-muted">{{ task.instance.business_key }}</div>{% endif %}</td>
        <td>{{ task.step_name }}</td>
        <td>{% if task.claimed_by %}{% blocktranslate with user=task.claimed_by %}claimed by {{ user }}{% endblocktranslate %}
            {% elif task.assignee %}{{ task.assignee }}
            {% else %}{% for group in task.candidate_groups.all %}{{ group.name }}{% if not forloop.last %}, {% endif %}{% empty %}-{% endfor %}{% endif %}</td>
        <td>{{ task.created_at|date:"Y-m-d H:i" }}</td>
        <td>{% if task.due_at %}{{ task.due_at|date:"Y-m-d H:i" }}{% if task.overdue %} <span class="dwf-badge dwf-badge-overdue">{% translate "overdue" %}</span>{% endif %}{% else %}-{% endif %}</td>
        <td>
          {% if not task.claimed_by %}
            <form method="post" action="{% pk_url urls.claim task.pk %}" class="dwf-inline-form">{% csrf_token %}
              <input type="hidden" name="next" value="{{ request.get_full_path }}"><button type="submit" class="button">{% translate "Claim" %}</button></form>
          {% elif task.claimed_by_id == request.user.pk or request.user.is_superuser %}
            <form method="post" action="{% pk_url urls.unclaim task.pk %}" class="dwf-inline-form">{% csrf_token %}
              <input type="hidden" name="next" value="{{ request.get_full_path }}"><button type="submit" class="button">{% translate "Unclaim" %}</button></form>
          {% endif %}
        </td>
      </tr>
    {% endfor %}
"""

URLS = {
    "task": "admin:django_workflows_humantask_complete",
    "claim": "admin:django_workflows_humantask_claim",
    "unclaim": "admin:django_workflows_humantask_unclaim",
    "bulk": "admin:django_workflows_humantask_bulk",
    "instance": "admin:django_workflows_workflowinstance_change",
}


def both(user, urls):
    """The template's rows and ``{% inbox_rows %}``'s, from one rendering (one CSRF token)."""
    request = RequestFactory().get("/admin/django_workflows/humantask/inbox/", {"p": "1"})
    request.user = user
    request.current_app = "admin"
    source = (
        "<table>" + TEMPLATE_ROWS + "</table>"
        "{% load dwf_inbox %}<!--split--><table>{% inbox_rows tasks urls %}</table>"
    )
    tasks = list(taskpage.inbox_page(user, "1"))
    html = engines["django"].from_string(source).render({"tasks": tasks, "urls": urls}, request)
    template_rows, python_rows = html.split("<!--split-->")
    return tasks, template_rows, python_rows


@pytest.fixture
def varied(start, approver, other_manager):
    """Tasks in every state a row shows: claimed by the user, by another, assigned,
    offered to groups, overdue, due later, with markup in their texts."""
    tasks = [HumanTask.objects.get(instance=start("approval", amount=n)) for n in range(6)]
    HumanTask.objects.filter(pk=tasks[0].pk).update(claimed_by=approver)
    HumanTask.objects.filter(pk=tasks[1].pk).update(
        claimed_by=other_manager, title="<b>Pay</b> & check", summary=""
    )
    HumanTask.objects.filter(pk=tasks[2].pk).update(
        assignee=approver, due_at=timezone.now() - timedelta(hours=2)
    )
    HumanTask.objects.filter(pk=tasks[3].pk).update(
        due_at=timezone.now() + timedelta(days=2), summary="Ada: <i>120</i> EUR"
    )
    HumanTaskGroup.objects.create(task=tasks[4], name="accountants & co")
    HumanTaskGroup.objects.create(task=tasks[4], name="Auditors")
    start("approval", business_key="EXP-<7>", amount=99)
    return tasks


@pytest.mark.parametrize(
    "urls",
    [URLS, {**URLS, "bulk": "", "instance": ""}],
    ids=["admin", "without-bulk-and-instance-links"],
)
def test_the_rows_are_the_template_rows(varied, approver, urls):
    viewer = grant(approver, "complete_any_task")  # sees the task another claimed
    tasks, template_rows, python_rows = both(viewer, urls)

    assert len(tasks) == 7
    assertHTMLEqual(python_rows, template_rows)
    assert python_rows.count("/unclaim/") == 1  # the viewer's own claim only


def test_a_superuser_may_unclaim_any_task(varied):
    boss = StaffFactory(username="boss", is_superuser=True)
    HumanTask.objects.update(claimed_by=boss)
    _tasks, template_rows, python_rows = both(boss, URLS)

    assert python_rows.count("/unclaim/") == 7
    assertHTMLEqual(python_rows, template_rows)


def test_the_group_names_of_a_page_are_one_query(varied, approver):
    page = list(taskpage.inbox_page(approver, "1"))
    with CaptureQueriesContext(connection) as queries:
        names = {task.pk: group_names(task) for task in page}

    assert len(queries) == 0
    assert names[varied[4].pk] == ["Auditors", "accountants & co", "managers"]
    assert names[varied[0].pk] == ["managers"]
