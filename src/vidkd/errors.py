"""User-facing errors.

A :class:`VidkdError` carries one line that names the thing that is wrong and the
fix. The CLI prints it without a traceback and exits with status 2.
"""


class VidkdError(Exception):
    """An error caused by the user's input (file, config, dataset), not by a bug."""
