"""``manage.py workflow_sweep``: its options, and what it prints."""

import pytest
from django.core.management import CommandError, call_command


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1", "1e300", "soon"])
def test_the_interval_must_be_a_finite_positive_number_of_seconds(value):
    with pytest.raises(CommandError, match="--interval"):
        call_command("workflow_sweep", "--loop", "--interval", value)


@pytest.mark.django_db
def test_a_finite_interval_is_accepted():
    from django_workflows.management.commands.workflow_sweep import interval

    assert interval("0.25") == 0.25 and interval("86400") == 86400.0


def test_an_interval_without_loop_is_an_error_not_ignored():
    with pytest.raises(CommandError, match="--interval needs --loop"):
        call_command("workflow_sweep", "--interval", "5")
