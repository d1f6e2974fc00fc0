"""An example pgjobs extension, ``my-extension``: a cleanup job and a report job.

Run it with ``pgjobs worker --app my_extension:extension --profile profile.yaml`` from the
``examples/`` directory, or see it all at work with ``pgjobs demo``.
"""

from my_extension.extension import MyExtension, extension

__all__ = ["MyExtension", "extension"]
