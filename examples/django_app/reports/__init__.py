"""A Django app with a pgjobs extension (``jobs.py``) and the worker command."""
