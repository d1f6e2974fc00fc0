"""pytest fixtures for testing jobs: see :mod:`pgjobs.testing`."""
