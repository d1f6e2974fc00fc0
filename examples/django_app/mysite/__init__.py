"""The example Django project: one app, ``reports``, whose jobs a pgjobs worker runs."""
