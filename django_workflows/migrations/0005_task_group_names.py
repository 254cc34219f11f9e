"""Candidate groups stored by name (``HumanTaskGroup``), not as links to existing groups.

A task used to link only the groups that existed when it was created: a step naming a
group not yet created got no group, and the task was open to every staff user. The
names are now kept, so the task waits for exactly the members of those groups.

The data step copies the names of the linked groups and, for every task, the names its
step declared in the stored graph of its definition version (the names that had no
group then), so no task loses a candidate group in the move.
"""

import django.db.models.deletion
from django.db import migrations, models

BATCH = 2000


def names_from_links_and_graphs(apps, schema_editor):
    HumanTask = apps.get_model("django_workflows", "HumanTask")
    HumanTaskGroup = apps.get_model("django_workflows", "HumanTaskGroup")
    DefinitionVersion = apps.get_model("django_workflows", "DefinitionVersion")
    through = HumanTask._meta.get_field("candidate_groups").remote_field.through
    db = schema_editor.connection.alias

    declared: dict = {}  # (definition id, step name) -> the step's candidate group names
    for pk, graph in DefinitionVersion.objects.using(db).values_list("pk", "graph").iterator():
        for step, described in ((graph or {}).get("steps") or {}).items():
            names = (described or {}).get("candidate_groups") or ()
            declared[pk, step] = [n for n in names if isinstance(n, str) and 0 < len(n) <= 150]
    linked: dict = {}
    rows = through.objects.using(db).values_list("humantask_id", "group__name")
    for task_id, name in rows.iterator():
        linked.setdefault(task_id, set()).add(name)

    batch = []
    tasks = HumanTask.objects.using(db).values_list("pk", "instance__definition_id", "step_name")
    for task_id, definition_id, step in tasks.iterator():
        names = linked.get(task_id, set()) | set(declared.get((definition_id, step), ()))
        batch.extend(HumanTaskGroup(task_id=task_id, name=name) for name in sorted(names))
        if len(batch) >= BATCH:
            HumanTaskGroup.objects.using(db).bulk_create(batch)
            batch = []
    HumanTaskGroup.objects.using(db).bulk_create(batch)


def links_from_names(apps, schema_editor):
    """Back: link the groups that exist (a name without a group is lost, as it was)."""
    HumanTask = apps.get_model("django_workflows", "HumanTask")
    HumanTaskGroup = apps.get_model("django_workflows", "HumanTaskGroup")
    Group = apps.get_model("auth", "Group")
    through = HumanTask._meta.get_field("candidate_groups").remote_field.through
    db = schema_editor.connection.alias
    groups = dict(Group.objects.using(db).values_list("name", "pk"))
    links = [
        through(humantask_id=task_id, group_id=groups[name])
        for task_id, name in HumanTaskGroup.objects.using(db).values_list("task_id", "name")
        if name in groups
    ]
    through.objects.using(db).bulk_create(links, batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("django_workflows", "0004_steprun_crashes"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="humantask",
            options={
                "ordering": ("-created_at",),
                "permissions": [
                    ("complete_any_task", "Can complete any human task, whoever it is for")
                ],
                "verbose_name": "human task",
                "verbose_name_plural": "human tasks",
            },
        ),
        # related_name "+" while the old field of the same name still exists.
        migrations.CreateModel(
            name="HumanTaskGroup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="The name of an auth group (auth.Group).",
                        max_length=150,
                        verbose_name="group name",
                    ),
                ),
                (
                    "task",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="django_workflows.humantask",
                        verbose_name="task",
                    ),
                ),
            ],
            options={
                "verbose_name": "candidate group",
                "verbose_name_plural": "candidate groups",
                "ordering": ("task", "name"),
                "indexes": [models.Index(fields=["name", "task"], name="dwf_task_group_name")],
                "constraints": [
                    models.UniqueConstraint(fields=("task", "name"), name="dwf_task_group_unique")
                ],
            },
        ),
        migrations.RunPython(names_from_links_and_graphs, links_from_names, elidable=False),
        migrations.RemoveField(model_name="humantask", name="candidate_groups"),
        migrations.AlterField(
            model_name="humantaskgroup",
            name="task",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="candidate_groups",
                to="django_workflows.humantask",
                verbose_name="task",
            ),
        ),
    ]
