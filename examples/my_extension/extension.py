"""The extension: its name prefixes every job name, and ``jobs()`` registers them."""

from __future__ import annotations

from my_extension.jobs import CleanupJob, ReportJob
from pgjobs import Extension, Job


class MyExtension(Extension):
    """Registers the example jobs under the ``my-extension-`` prefix."""

    name = "my-extension"

    def jobs(self) -> list[Job]:
        """The jobs of this extension."""
        return [CleanupJob(), ReportJob()]


#: What ``--app my_extension:extension`` names.
extension = MyExtension()
