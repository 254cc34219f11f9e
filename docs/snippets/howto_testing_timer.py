from django.db.models.functions import Now

instance.step_runs.filter(status="scheduled").update(due_at=Now())
engine.run_due_timers()
