"""``python -m pgjobs``: the same as the ``pgjobs`` command."""

from pgjobs.cli import main

main()
