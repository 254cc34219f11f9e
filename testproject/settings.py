"""Settings of the demo and test project. ``DATABASE_URL`` selects the database (default SQLite)."""

import os
import tempfile
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-do-not-use-in-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_workflows",
    "testproject.demo",
    "testproject.testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "testproject.wsgi.application"

# Persistent connections with health checks: the documented production setting
# (a new connection per request or per task costs far more than the work itself).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=600,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite: wait for the write lock instead of failing at once under concurrent writers;
    # WAL with synchronous=NORMAL, SQLite's advice for applications (docs/settings.md):
    # readers do not block the writer, and a commit needs no fsync.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not memory, so that the worker processes of the tests share it; one per
    # test run, so that two runs at once do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"django_workflows_test_{os.getpid()}.sqlite3")
    }

if DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # One test database per test run, so that two runs at once do not collide.
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "django-workflows API",
    "DESCRIPTION": "Start, inspect, cancel and retry workflows; complete human tasks.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# The engine: in-process by default; WORKFLOWS_ENGINE=djangoq runs steps on a qcluster.
DJANGO_WORKFLOWS = {}
if os.environ.get("WORKFLOWS_ENGINE") == "djangoq":
    DJANGO_WORKFLOWS["ENGINE"] = "django_workflows.engine.djangoq.DjangoQExecutionEngine"
if "WORKFLOWS_ENGINE_CLASS" in os.environ:  # any engine class, e.g. a fault-injecting one
    DJANGO_WORKFLOWS["ENGINE"] = os.environ["WORKFLOWS_ENGINE_CLASS"]
for _key in ("LEASE_SECONDS", "STALE_QUEUED_SECONDS", "CLUSTER_SWEEP_INTERVAL"):
    if f"WORKFLOWS_{_key}" in os.environ:
        _value = os.environ[f"WORKFLOWS_{_key}"]
        DJANGO_WORKFLOWS[_key] = None if _value == "none" else float(_value)
if "WORKFLOWS_CRASH_LIMIT" in os.environ:
    DJANGO_WORKFLOWS["CRASH_LIMIT"] = int(os.environ["WORKFLOWS_CRASH_LIMIT"])

# django-q2: the ORM broker on the project database by default, Redis with Q_BROKER=redis.
Q_CLUSTER = {
    "name": os.environ.get("Q_NAME", "workflows"),
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": 600,
    "retry": 660,  # redelivery of an unacknowledged ORM message; the sweep acts sooner
    "max_attempts": 1,
    "ack_failures": True,
    "poll": float(os.environ.get("Q_POLL", "0.2")),
    "catch_up": False,
    "save_limit": 100,
    "label": "Task queue",
    "orm": "default",
}
if os.environ.get("Q_BROKER") == "redis":
    del Q_CLUSTER["orm"]
    Q_CLUSTER["redis"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_workflows": {"handlers": ["console"], "level": "WARNING"}},
}

# --- Optional backends (django_workflows.contrib; extras celery, saq, tasks) -----------------
# WORKFLOWS_ENGINE=celery|saq|tasks selects one; the tests in tests/contrib start their
# workers with it. Each backend's options are read only when its engine or worker is used.
_CONTRIB_ENGINES = {
    "celery": "django_workflows.contrib.celery.CeleryExecutionEngine",
    "saq": "django_workflows.contrib.saq.SAQExecutionEngine",
    "tasks": "django_workflows.contrib.django_tasks.DjangoTasksExecutionEngine",
}
if os.environ.get("WORKFLOWS_ENGINE") in _CONTRIB_ENGINES:
    DJANGO_WORKFLOWS["ENGINE"] = _CONTRIB_ENGINES[os.environ["WORKFLOWS_ENGINE"]]
_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Celery: the app of testproject/celery_app.py reads the CELERY_* settings.
DJANGO_WORKFLOWS["CELERY_APP"] = "testproject.celery_app.app"
CELERY_BROKER_URL = _REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "django_workflows")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True

# SAQ: testproject/saq_worker.py and the engine build their queues from these.
DJANGO_WORKFLOWS["SAQ_URL"] = _REDIS_URL
DJANGO_WORKFLOWS["SAQ_QUEUE"] = os.environ.get("SAQ_QUEUE", "django_workflows")

# Django Tasks: django-tasks' database backend, when installed. Its app is installed in
# every process (the test process too) so that its table exists in the test database
# that the db_worker processes share.
import importlib.util  # noqa: E402

if importlib.util.find_spec("django_tasks_db") is not None:
    INSTALLED_APPS += ["django_tasks", "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
