"""The jobs of ``my-extension``, one module each."""

from my_extension.jobs.cleanup import CleanupJob
from my_extension.jobs.report import ReportJob

__all__ = ["CleanupJob", "ReportJob"]
