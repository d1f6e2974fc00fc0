"""``my-extension-cleanup``: delete expired rows of ``my_items`` every hour."""

from __future__ import annotations

from pgjobs import Job, JobContext, JobResult


class CleanupJob(Job):
    """Deletes the rows of ``my_items`` older than ``retention_days`` (a parameter, default 30).

    The ``seed_expired`` parameter (default 0) first inserts that many already-expired rows, so
    that a demo has something to delete on every run.
    """

    name = "my-extension-cleanup"
    description = "Clean up expired items"
    schedule = "0 0 * * * *"  # second minute hour day month weekday: every hour

    async def execute(self, ctx: JobContext) -> JobResult:
        retention_days = int(ctx.parameters.get("retention_days", "30"))
        seed_expired = int(ctx.parameters.get("seed_expired", "0"))
        async with ctx.db_pool.connection() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS my_items ("
                " id bigserial PRIMARY KEY,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            )
            if seed_expired > 0:
                await conn.execute(
                    "INSERT INTO my_items (created_at)"
                    " SELECT now() - make_interval(days => %s + 1) FROM generate_series(1, %s)",
                    [retention_days, seed_expired],
                )
            cur = await conn.execute(
                "DELETE FROM my_items WHERE created_at < now() - make_interval(days => %s)",
                [retention_days],
            )
            deleted = cur.rowcount
        ctx.log.info("cleanup completed", extra={"deleted": deleted})
        return JobResult.success(f"Deleted {deleted} items").with_data(deleted=deleted)
