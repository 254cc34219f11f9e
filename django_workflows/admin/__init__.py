"""The Django admin of django-workflows, registered on ``admin.site`` when the app is installed.

- Workflow instances: list, filters, search, a detail page with the graph, the step runs,
  the history and the open tasks; cancel and retry (``change_workflowinstance``).
- Human tasks: the list, "My tasks" (the inbox), a page to complete a task with its form.
- Definitions: the stored versions with their graph and their instances by status.
- "My tasks (N)": a row of the admin index, the app index and the navigation sidebar
  that leads to the inbox, with the count of the user's open tasks.
- Dashboard: charts of a period and a workflow (``view_dashboard``): instances per day,
  the slowest and the most failing steps, the tasks waiting, the worker's queue.
- Signals: the external signals sent to instances, pending (buffered), consumed or
  discarded; read-only (``engine.send_signal`` writes them).
- Substitutions: out-of-office substitutes, each user's own (``change_substitution``:
  everyone's).

Every workflow page is read-only: state changes go through the engine (``get_engine()``).
Substitutions are a user's settings, edited with a form validated by the model.
"""

from .dashboard import DashboardAdmin
from .definitions import DefinitionVersionAdmin
from .instances import WorkflowInstanceAdmin
from .mytasks import MyTaskAdmin
from .signals import WorkflowSignalAdmin
from .substitutes import SubstitutionAdmin
from .tasks import HumanTaskAdmin

__all__ = [
    "DashboardAdmin",
    "DefinitionVersionAdmin",
    "HumanTaskAdmin",
    "MyTaskAdmin",
    "SubstitutionAdmin",
    "WorkflowInstanceAdmin",
    "WorkflowSignalAdmin",
]
