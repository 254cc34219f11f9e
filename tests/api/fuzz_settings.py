"""Settings of the live server the fuzz test runs: the test project on its own SQLite file,
without the worker tests' workflows (their steps kill or block the process running them)."""

import os

from testproject.settings import *  # noqa: F403
from testproject.settings import INSTALLED_APPS

DEBUG = False
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "testproject.testapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["FUZZ_DATABASE"],
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}
# Comment attachments the fuzzer uploads: beside its database, not in the checkout.
MEDIA_ROOT = os.path.join(os.path.dirname(os.environ["FUZZ_DATABASE"]), "media")
