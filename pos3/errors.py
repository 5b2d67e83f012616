"""The boundary between pos3 and its caller: an error says what failed and why, first.

pos3's own errors (`FileNotFoundError`, `PermissionError` and every other `OSError`,
`StoreError`, `SyncError`, `UnsafeKeyError`) carry the URL, the operation and the
service's answer in their message; a `ValueError` (a malformed URL, an unknown profile,
an invalid argument) or a `PluginError` (a scheme no store serves) names what was
wrong. At the public API they are re-raised without the frames inside pos3 and
without the chained SDK exception, so a traceback is a few lines ending in that
message. A `SyncError` keeps each file's own exception (with its traceback and cause)
in ``failures``, and the full traceback is logged at DEBUG level on the ``pos3``
logger. Any other exception (a bug) keeps its whole traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from .executor import SyncError
from .local import UnsafeKeyError
from .plugins import PluginError
from .store import StoreError

log = logging.getLogger("pos3")

F = TypeVar("F", bound=Callable[..., Any])

#: The errors pos3 raises on purpose, each with a complete message.
EXPECTED = (OSError, StoreError, SyncError, UnsafeKeyError, ValueError, PluginError)


def user_facing(fn: F) -> F:
    """Re-raise `EXPECTED` errors from ``fn`` as if raised at the caller's call (see the module)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EXPECTED as exc:
            log.debug("%s failed", fn.__qualname__, exc_info=exc)
            raise exc.with_traceback(None) from None

    return wrapper  # type: ignore[return-value]
