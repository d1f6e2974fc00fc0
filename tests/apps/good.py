"""A well-formed extension with one async and one sync job, exposed in every accepted shape."""

from __future__ import annotations

from pgjobs import Extension, Job, JobContext, JobResult


class CleanupJob(Job):
    name = "good-cleanup"
    description = "Clean up expired items"
    schedule = "0 0 * * * *"
    tags = ("maintenance",)

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success("cleaned")


class ReportJob(Job):
    name = "good-report"
    description = "Write the daily report"
    tags = ["reports", "maintenance"]
    timezone = "Europe/Berlin"

    def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success("reported")


class GoodExtension(Extension):
    name = "good"
    config = {"retention_days": 30, "region": "eu"}

    def jobs(self) -> list[Job]:
        return [CleanupJob(), ReportJob()]


class OtherJob(Job):
    name = "other-ping"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success()


class OtherExtension(Extension):
    name = "other"

    def jobs(self) -> list[Job]:
        return [OtherJob()]


extension = GoodExtension()
extension_class = GoodExtension
extension_list = [GoodExtension(), OtherExtension]
extension_tuple = (GoodExtension(),)


def make_extensions() -> list[Extension]:
    return [GoodExtension(), OtherExtension()]


def make_extension() -> Extension:
    return OtherExtension()


class Holder:
    extension = OtherExtension()


not_an_extension = 42
a_job = CleanupJob()
list_with_junk = [GoodExtension(), "nope"]


def factory_that_fails() -> Extension:
    raise RuntimeError("database not configured")


def factory_returning_junk() -> object:
    return {"name": "good"}
