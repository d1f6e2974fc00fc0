"""Settings of the example project: just what Django and the ``pgjobs_worker`` command need.

One database serves the application and pgjobs: ``PGJOBS_DSN``, e.g.
``postgresql://app@db.internal/app``, migrated with ``pgjobs db upgrade``.
"""

import os

from psycopg.conninfo import conninfo_to_dict

SECRET_KEY = "not-a-secret: an example project"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["reports"]

_db = conninfo_to_dict(os.environ.get("PGJOBS_DSN", ""))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}

# What `python manage.py pgjobs_worker` runs: the extensions as app specs (`module:attr`, as
# `pgjobs worker --app` takes them) and the worker's settings, under pgjobs.run_worker's names.
PGJOBS = {
    "EXTENSIONS": ["reports.jobs:extension"],
    "DSN": os.environ.get("PGJOBS_DSN", ""),
    "CONCURRENCY": 4,
    "QUEUES": ["default"],
    "GRACE": 30,
}

# The worker says what it does on the "pgjobs" loggers.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgjobs": {"handlers": ["console"], "level": "INFO"}},
}
