"""Models of the test app: what the reliability tests observe from inside the steps."""

from django.db import models


class SideEffect(models.Model):
    """One execution of a step's body, written by the step itself (outside the engine).

    A step inserts its row when it begins and sets ``finished_at`` when it is done, so a
    row without ``finished_at`` is an execution cut short (its worker was killed). The
    tests count rows per (instance, step, attempt) and compare the time ranges.
    """

    instance_id = models.UUIDField(db_index=True)
    step = models.CharField(max_length=200)
    attempt = models.PositiveIntegerField()
    pid = models.PositiveIntegerField(default=0)
    #: Seconds the step sleeps: a kill before ``started_at + planned`` hits it mid-step.
    planned = models.FloatField(default=0.0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=("instance_id", "step", "attempt"), name="testapp_se_key")]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.step} #{self.attempt}"
