"""Open transactions, and the signal handlers that abort them: on SIGTERM or SIGINT the
temporaries of every open commit of this process are removed, then the process dies as
the signal asks."""
import os
import signal
import threading
import weakref

_OPEN = weakref.WeakSet()
_LOCK = threading.Lock()
_INSTALLED = {}


def _on_signal(signum, frame):
    for t in list(_OPEN):
        if getattr(t, "owner", None) != os.getpid():
            continue  # a forked worker (DataLoader) must not remove its parent's temporaries
        try:
            t.abort()
        except Exception:  # pragma: no cover - best effort while dying
            pass
    prev = _INSTALLED.get(signum, signal.SIG_DFL)
    if callable(prev):
        return prev(signum, frame)  # e.g. KeyboardInterrupt for SIGINT
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # the default action: the exit status says which signal


def _install_handlers():
    if threading.current_thread() is not threading.main_thread():
        return
    with _LOCK:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig in _INSTALLED:
                continue
            prev = signal.getsignal(sig)
            if prev is signal.SIG_IGN or prev is None:
                continue
            if prev is not signal.SIG_DFL and prev is not signal.default_int_handler:
                continue  # the application has its own: leave it alone
            _INSTALLED[sig] = prev
            signal.signal(sig, _on_signal)


class Transaction:
    """`with` commits on success and aborts on an exception; a signal aborts it too."""

    def _opened(self):
        _install_handlers()
        self.owner = os.getpid()
        _OPEN.add(self)

    def _closed(self):
        _OPEN.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def commit(self):  # pragma: no cover - every transaction defines it
        raise NotImplementedError

    def abort(self):  # pragma: no cover
        raise NotImplementedError
