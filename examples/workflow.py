"""A workflow: resize the images, then build the album from what the resize runs returned.

From the ``examples/`` directory, a worker (or several)::

    pgjobs worker --app workflow:extension

and one album, queued with ``PGJOBS_DSN`` set::

    python workflow.py holidays beach.jpg hills.jpg harbour.jpg

One transaction queues a resize run per image and the album run ``after`` them all. The album
run waits in the database (``blocked``), costing the workers nothing, until every resize run
succeeded; then any worker takes it, and its ``ctx.dependencies`` hold the resize runs as they
ended, their data included. A resize run that fails for good (after its 3 attempts) cancels the
album run instead; ``pgjobs runs graph ID`` shows the whole album's runs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import psycopg

import pgjobs
from pgjobs import EnqueueRequest, Extension, Job, JobContext, JobResult


class ResizeJob(Job):
    """Makes the thumbnail of ``payload["image"]``, ``width`` pixels wide (a parameter)."""

    name = "album-resize"
    description = "Resize one image"
    max_attempts = 3  # a dependency retried is waited for: the album needs its last attempt

    async def execute(self, ctx: JobContext) -> JobResult:
        image = str((ctx.payload or {})["image"])
        width = int(ctx.parameters.get("width", "1024"))
        thumbnail = f"thumbnails/{width}/{image}"  # a real job writes the resized file here
        return JobResult.success(f"resized {image}").with_data(image=image, thumbnail=thumbnail)


class AlbumJob(Job):
    """Builds the album from the thumbnails its resize runs made, in the order of its images."""

    name = "album-build"
    description = "Build an album from its resized images"

    async def execute(self, ctx: JobContext) -> JobResult:
        payload = ctx.payload or {}
        thumbnails = {d.data["image"]: d.data["thumbnail"] for d in ctx.dependencies}
        album = str(payload["album"])
        pages = [thumbnails[image] for image in payload["images"]]
        return JobResult.success(f"album {album}: {len(pages)} pages").with_data(
            album=album, pages=pages
        )


def album_requests(album: str, images: list[str]) -> list[EnqueueRequest]:
    """A resize run per image, each named by a key, and the album run after all of them."""
    keys = [f"resize-{i}" for i in range(len(images))]
    resizes = [
        EnqueueRequest(ResizeJob, {"image": image}, key=key)
        for key, image in zip(keys, images, strict=True)
    ]
    album_run = EnqueueRequest(AlbumJob, {"album": album, "images": images}, after=keys)
    return [*resizes, album_run]


def queue_album(conn: Any, album: str, images: list[str]) -> int:
    """Queue the album's runs in the caller's transaction; the album run's id."""
    return pgjobs.enqueue_many_sync(conn, album_requests(album, images))[-1]


class AlbumExtension(Extension):
    """Registers the workflow's jobs under the ``album-`` prefix."""

    name = "album"

    def jobs(self) -> list[Job]:
        """The jobs of this extension."""
        return [ResizeJob(), AlbumJob()]


#: What ``--app workflow:extension`` names.
extension = AlbumExtension()


if __name__ == "__main__":
    with psycopg.connect(os.environ["PGJOBS_DSN"]) as conn:  # commits when the block ends
        run_id = queue_album(conn, sys.argv[1], sys.argv[2:])
    print(f"album run {run_id} waits for {len(sys.argv) - 2} resize run(s)")
