"""The leftovers of dead writers: unfinished journals are finished, temporaries removed."""
import os

from .journal import recover, remove
from .owners import TEMP_RE, owner_dead


def sweep_stale(directory):
    """Remove facenms temporaries in `directory` whose process is dead; their paths.

    Only entries matching facenms's own `.NAME.tmp-PID-HOST-RAND` pattern made
    on this host are considered. Unfinished commit journals are completed first.
    """
    directory = os.fspath(directory)
    recover(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        m = TEMP_RE.match(e.name)
        if not m:
            continue
        try:
            mtime = e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if owner_dead(int(m.group("pid")), m.group("host"), mtime):
            try:
                remove(e.path)
                removed.append(e.path)
            except OSError:
                pass
    return removed
