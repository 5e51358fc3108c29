"""Whose temporary is this: facenms's hidden names carry the PID and host of their writer,
so the next run can tell a dead writer's leftovers from a live one's work."""
import os
import re
import socket
import uuid

HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
# facenms's own pattern and nothing else: the PID and host tell whose temporary it is
TEMP_RE = re.compile(r"^\.(?P<base>.+)\.tmp-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]+)-[0-9a-f]{8}$")
JOURNAL_RE = re.compile(r"^\.facenms-commit-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]+)-[0-9a-f]{8}"
                        r"\.json$")


def temp_name(final):
    """A hidden sibling of `final` that no other writer will pick."""
    d, base = os.path.split(os.path.abspath(final))
    return os.path.join(d, ".%s.tmp-%d-%s-%s" % (base, os.getpid(), HOST, uuid.uuid4().hex[:8]))


def journal_name(directory):
    return os.path.join(directory, ".facenms-commit-%d-%s-%s.json"
                        % (os.getpid(), HOST, uuid.uuid4().hex[:8]))


def _boot_time():
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _process_start(pid):
    """Start time (epoch seconds) of process `pid`, None if unknown."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        bt = _boot_time()
        return None if bt is None else bt + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def owner_dead(pid, host, mtime):
    """True when the process that made a temporary of this host is gone.

    A live PID whose process started after the temporary was last written is
    a reused PID: the owner is dead too. Other hosts' temporaries are never
    judged (their PIDs mean nothing here).
    """
    if host != HOST:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    start = _process_start(pid)
    return start is not None and start > mtime + 2
