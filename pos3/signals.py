"""SIGTERM inside a mirror block: an error exit that still runs the ``sync_on_error=True`` uploads.

Slurm, Kubernetes and spot preemption stop a job with SIGTERM, then SIGKILL
after a grace period. Python's default action for SIGTERM ends the process at
once, so a mirror entered from the main thread replaces that default with a
handler raising `Terminated` in the main thread, like Ctrl-C raises
`KeyboardInterrupt`. Rules (`SignalGuard`):

* installed only when the mirror is entered from the main thread and SIGTERM
  still has its default action; a handler the program installed (or
  ``SIG_IGN``) stays in charge and pos3 does not replace it. Such a handler
  may ``raise pos3.Terminated()`` to get the rules below;
* restored on exit, unless the program replaced it inside the block (theirs
  is kept);
* a SIGTERM arriving while the block is already exiting does not interrupt
  the final uploads: they finish, then `Terminated` is raised;
* once a SIGTERM was received, a second SIGTERM or a SIGINT during the final
  uploads ends the process at once with the signal's default action (unless
  that signal is ignored). Nothing is torn: puts are atomic, downloads write
  temporary files, and the state database is transactional.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    _Handler = Callable[[int, FrameType | None], Any] | int | None

log = logging.getLogger("pos3")


class Terminated(SystemExit):
    """SIGTERM stopped a ``with pos3.mirror():`` block.

    A `SystemExit` with ``code`` 143 (128 + SIGTERM): uncaught, it ends the
    process with the status a shell reports for a process stopped by SIGTERM.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class SignalGuard:
    """Owns SIGTERM for one mirror: `enter` installs, `exiting` wraps the final uploads."""

    def __init__(self, exit_code: CodeType | None = None) -> None:
        #: The code object of the mirror's ``__exit__``: a signal landing there is deferred, never raised.
        self._exit_code = exit_code
        self._handler = self._on_sigterm  # one bound method, so that it compares equal to itself
        self._previous: _Handler = None  # the SIGTERM handler replaced by `enter`, if any
        self._installed = False
        self._exiting = False
        self._uploads = 0  # final uploads to finish, once exiting
        self._saved: dict[int, _Handler] = {}  # handlers replaced by SIG_DFL after a SIGTERM
        #: A SIGTERM arrived (or a `Terminated` left the block).
        self.received = False

    def enter(self) -> None:
        """Install the handler if this is the main thread and SIGTERM has its default action."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous is not signal.SIG_DFL:
            return  # the program's own handler (or SIG_IGN) decides
        signal.signal(signal.SIGTERM, self._handler)
        self._previous, self._installed = previous, True

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if self._exiting or self._in_exit(frame):
            self._stop_at_once_on_next()
            return
        raise Terminated(signum)

    def _in_exit(self, frame: FrameType | None) -> bool:
        """True if the main thread is already inside the mirror's ``__exit__`` (then nothing may raise)."""
        while frame is not None:
            if frame.f_code is self._exit_code:
                return True
            frame = frame.f_back
        return False

    def _stop_at_once_on_next(self) -> None:
        """Give SIGTERM and SIGINT their default action (end the process) until `exiting` ends."""
        if self._saved or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if previous not in (None, signal.SIG_IGN):  # an ignored signal stays ignored; None cannot be restored
                self._saved[sig] = previous
                signal.signal(sig, signal.SIG_DFL)
        if self._uploads:
            log.warning("SIGTERM: finishing the final uploads; another SIGTERM or Ctrl-C stops at once")
        else:
            log.warning("SIGTERM: stopping (no uploads to finish)")

    @contextlib.contextmanager
    def exiting(self, exc: BaseException | None, uploads: int) -> Iterator[None]:
        """Run the ``uploads`` final uploads of a block leaving with ``exc``.

        After a SIGTERM, a second one or a SIGINT ends the process at once. A
        SIGTERM that arrived during the uploads raises `Terminated` after them
        (chained to what they raised, or to ``exc``). Restores every handler.
        """
        self._exiting = True
        self._uploads = uploads
        if isinstance(exc, Terminated):
            self.received = True
        if self.received:
            self._stop_at_once_on_next()
        try:
            yield
        except Exception as err:
            if self.received and not isinstance(exc, Terminated):
                self._restore()
                raise Terminated() from err
            raise
        finally:
            self._restore()
        if self.received and not isinstance(exc, Terminated):
            raise Terminated() from exc

    def _restore(self) -> None:
        for sig, previous in self._saved.items():
            signal.signal(sig, previous)
        self._saved.clear()
        if self._installed and signal.getsignal(signal.SIGTERM) == self._handler:
            signal.signal(signal.SIGTERM, self._previous)
        self._installed = False
