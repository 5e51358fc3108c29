"""Exports under kills, signals and full disks: readers see the old set or the new one.

The kill test runs each export in a subprocess whose os.replace / os.rename /
the directory exchange call os._exit right after the k-th call, for every k
(and just before the first), and then checks what a reader finds; "nox" is a
directory export where RENAME_EXCHANGE is refused (the move-aside path).
"""
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from procs import child_env
from facenms.data import open_dataset, synthetic, write_face_recordio
from facenms.io import recover, sweep_stale
from facenms.io.owners import temp_name
from facenms.pipeline import export

HERE = os.path.dirname(os.path.abspath(__file__))
KILLED = 17


def env():
    return child_env(threads=None)


def snapshot(paths):
    out = {}
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            for a, _, fs in os.walk(p):
                for f in fs:
                    q = os.path.join(a, f)
                    out[os.path.relpath(q, p)] = open(q, "rb").read()
        elif os.path.exists(p):
            out[os.path.basename(p)] = open(p, "rb").read()
    return out


EXPORT_KILLED_AFTER = r"""
import os, sys
import numpy as np
import facenms.io.commit as atomic

kind, src, out, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, sys.argv[5])
from test_export_crash import write
calls = [0]

def dies_after(fn):
    def call(*a, **kw):
        if k == 0:
            os._exit(%d)  # k = 0: killed just before the first rename
        fn(*a, **kw)
        calls[0] += 1
        if calls[0] == k:
            os._exit(%d)  # no cleanup, no atexit: a kill right after this rename
    return call

os.replace, os.rename = dies_after(os.replace), dies_after(os.rename)
atomic.exchange = dies_after(atomic.exchange)
if kind == "nox":
    def no_exchange(a, b):  # a file system without RENAME_EXCHANGE
        raise OSError(22, "Invalid argument")
    atomic.exchange = no_exchange
from facenms.data import open_dataset
n = len(open_dataset(src))
write(kind, src, out, np.arange(1, n, 2))  # the new set; the old one was np.arange(0, n, 2)
""" % (KILLED, KILLED)


def write(kind, src, out, keep):
    ds = open_dataset(src)
    if kind in ("dir", "nox"):
        export.write_recordio(out, ds, keep)
    elif kind == "rec":
        export.write_recordio(out, ds, keep, layout="insightface")
    elif kind == "lst":
        export.write_lst(out, ds, keep)
    else:
        export.write_imagefolder(out, ds, keep, mode="copy", overwrite=True)


def outputs(kind, out):
    if kind == "rec":
        d = os.path.dirname(out)
        return [out, out[:-4] + ".idx", os.path.join(d, "property"),
                out[:-4] + ".label_map.npy", out[:-4] + ".labels.npz"]
    if kind == "lst":
        return [out, out[:-4] + ".label_map.npy"]
    return [out]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return synthetic.make_image_folder(tmp_path_factory.mktemp("src") / "img",
                                       num_identities=4, images_per_identity=(3, 4), size=12,
                                       seed=5)


@pytest.mark.parametrize("kind", ["dir", "nox", "rec", "lst", "folder"])
def test_kill_after_every_rename(tmp_path, source, kind):
    n = len(open_dataset(source))
    work = tmp_path / "work"
    name = dict(dir="core", nox="core", rec="core.rec", lst="core.lst", folder="tree")[kind]
    # the old state, and the new one as an uninterrupted run leaves it
    states = {}
    for which, keep in (("new", np.arange(1, n, 2)), ("old", np.arange(0, n, 2))):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / "mine.txt").write_text("a user's file beside the export")
        write(kind, source, str(work / name), keep)
        states[which] = snapshot(outputs(kind, str(work / name)))
    assert states["old"] != states["new"]
    pristine = tmp_path / "pristine"
    shutil.copytree(work, pristine, symlinks=True)
    seen = []
    for k in range(0, 50):
        shutil.rmtree(work)
        shutil.copytree(pristine, work, symlinks=True)
        r = subprocess.run([sys.executable, "-c", EXPORT_KILLED_AFTER, kind, str(source),
                            str(work / name), str(k), HERE], env=env(), capture_output=True,
                           text=True)
        assert r.returncode in (0, KILLED), r.stderr
        out = str(work / name)
        if kind in ("dir", "folder"):
            # one rename swaps the folder: any reader, even without facenms, sees old or new
            raw = snapshot(outputs(kind, out))
            assert raw in (states["old"], states["new"]), (k, sorted(raw))
        if kind in ("dir", "nox", "rec"):
            ds = open_dataset(out)  # opening finishes a journaled group a dead process left
            assert len(ds) in (len(np.arange(0, n, 2)), len(np.arange(1, n, 2)))
            for i in range(len(ds)):
                ds.read_bytes(i)
        else:
            recover(str(work))  # what the next run does first
        got = snapshot(outputs(kind, out))
        assert got in (states["old"], states["new"]), (k, sorted(got))
        seen.append("old" if got == states["old"] else "new")
        assert (work / "mine.txt").read_text() == "a user's file beside the export"
        # the next run leaves no temporaries of the killed one behind
        write(kind, source, out, np.arange(1, n, 2))
        assert [f for f in os.listdir(work) if f.startswith(".")] == [], (k, os.listdir(work))
        if r.returncode == 0:
            break
    else:
        pytest.fail("the export never finished")
    # a folder killed before its exchange is old; a journaled group or move-aside (nox) is
    # decided once its journal is written (before the first rename), so the next open
    # finishes it: new
    assert seen[0] == ("old" if kind in ("dir", "folder") else "new") and \
        seen[-1] == "new", seen
    assert seen == sorted(seen, key=["old", "new"].index), seen  # once new, never old again


EXPORT_PAUSED = r"""
import os, sys, time
import numpy as np
from facenms.data import open_dataset
from facenms.pipeline import export

src, out, marker = sys.argv[1], sys.argv[2], sys.argv[3]
ds = open_dataset(src)

def progress(it):
    for n, i in enumerate(it):
        if n == 3:
            open(marker, "w").close()
            time.sleep(120)  # the signal arrives here, mid-way through the images
        yield i

if out.endswith(".lst"):
    export.write_lst(out, ds, np.arange(len(ds)), progress=progress)
else:
    export.write_recordio(out, ds, np.arange(len(ds)), progress=progress)
"""


def temporaries(d):
    return [os.path.join(a, f) for a, ds, fs in os.walk(d) for f in ds + fs if ".tmp-" in f]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("name", ["core", "x/core.rec", "core.lst"])
def test_signal_mid_export_leaves_no_temporaries(tmp_path, source, sig, name):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", EXPORT_PAUSED, str(source),
                             str(tmp_path / name), str(marker)], env=env(),
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), "the export never reached its fourth image"
        assert temporaries(tmp_path), "nothing was being written"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # it still dies of the signal
    else:
        assert proc.returncode != 0
    assert temporaries(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) in (["marker"], ["marker", "x"])
    if (tmp_path / "x").exists():
        assert os.listdir(tmp_path / "x") == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, source):
    _, pid_part, host, _ = os.path.basename(temp_name(tmp_path / "x")).rsplit("-", 3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        d = tmp_path / "out"
        d.mkdir()

        def make(name, is_dir=False):
            p = d / name
            if is_dir:
                p.mkdir()
                (p / "train.rec").write_bytes(b"x" * 1000)
            else:
                p.write_bytes(b"x" * 1000)
            return p
        gone = [make(".train.rec.tmp-%d-%s-0123abcd" % (dead.pid, host)),
                make(".core.tmp-%d-%s-0123abcd" % (dead.pid, host), is_dir=True)]
        reused = make(".train.idx.tmp-%d-%s-0123abcd" % (live.pid, host))
        os.utime(reused, (1e9, 1e9))  # written long before the live process with that PID began
        gone.append(reused)
        kept = [make(".train.rec.tmp-%d-%s-0123abcd" % (live.pid, host)),  # its owner runs
                make(".train.rec.tmp-%d-otherhost-0123abcd" % dead.pid),   # another host's
                make(".train.rec.tmp-%d-%s-xyz" % (dead.pid, host)),       # not our pattern
                make("train.rec.tmp-%d-%s-0123abcd" % (dead.pid, host))]   # not hidden
        export.write_recordio(d / "core.rec", open_dataset(source), [0, 1])
        assert [p.exists() for p in gone] == [False] * len(gone)
        assert [p.exists() for p in kept] == [True] * len(kept)
        assert sweep_stale(d) == []
    finally:
        live.kill()
        live.wait()


# -- full disks ----------------------------------------------------------------------

def noise_png(seed, size):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def small_disk():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="facenms-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
    try:
        yield d
    finally:
        subprocess.run(["umount", d], check=False)
        os.rmdir(d)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """About 3 MB of incompressible images: more than the 2 MB disk holds."""
    labels = np.repeat(np.arange(8), 5)
    d = tmp_path_factory.mktemp("big") / "big"
    write_face_recordio(d / "train.rec", labels, [noise_png(k, 150) for k in range(40)],
                        layout="im2rec")
    return d


def test_full_disk_is_refused_before_the_work(tmp_path, small_disk, big):
    np.save(tmp_path / "keep.npy", np.arange(40))
    out = os.path.join(small_disk, "core")
    r = subprocess.run([sys.executable, "-m", "facenms", "export", "--dataset", str(big),
                        "--keep", str(tmp_path / "keep.npy"), "--out", out],
                       capture_output=True, text=True, env=env())
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert ("%s: no space left: the output needs about" % out) in r.stderr
    assert "bytes, %s has" % small_disk in r.stderr
    assert os.listdir(small_disk) == []
    seen = []
    with pytest.raises(OSError, match="no space left") as e:
        export.write_recordio(out, open_dataset(big), np.arange(40),
                              progress=lambda it: (seen.append(i) or i for i in it))
    assert e.value.errno == errno.ENOSPC and seen == []  # before a single image was read


@pytest.mark.parametrize("fmt", ["dir", "rec", "folder", "lst"])
def test_disk_full_during_the_write(tmp_path, small_disk, big, fmt):
    ds = open_dataset(big)
    keep = np.arange(10)  # fits the check before the work...
    filler = os.path.join(small_disk, "filler")

    def fill_the_disk(it):
        for n, i in enumerate(it):
            if n == 1:  # ... then someone else fills the disk
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                    except OSError:
                        pass
            yield i
    out = os.path.join(small_disk, dict(dir="core", rec="sub/core.rec", folder="tree",
                                        lst="core.lst")[fmt])
    writer = dict(folder=export.write_imagefolder, lst=export.write_lst).get(
        fmt, export.write_recordio)
    with pytest.raises(OSError) as e:
        writer(out, ds, keep, progress=fill_the_disk,
               **({"rec_names": True} if fmt == "lst" else {}))
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and msg.startswith(out + ": no space left"), msg
    assert ".tmp-" not in msg
    assert os.listdir(small_disk) == ["filler"]  # no temporaries, no half output, no new folder


def test_sigterm_in_a_forked_worker_leaves_the_parent_alone(tmp_path):
    # DataLoader workers are forks: their SIGTERM must not abort the parent's transactions
    from facenms.io import AtomicFiles
    out = AtomicFiles()
    f = out.open(tmp_path / "a.bin")
    f.write(b"x")
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(3)  # not reached: the signal's default action ends the child
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    out.commit()
    assert (tmp_path / "a.bin").read_bytes() == b"x"


def test_read_only_output_is_refused_before_the_work(tmp_path, small_disk, big):
    if subprocess.run(["mount", "-o", "remount,ro", small_disk]).returncode != 0:
        pytest.skip("cannot remount read-only here")
    np.save(tmp_path / "keep.npy", np.arange(3))
    out = os.path.join(small_disk, "core")
    r = subprocess.run([sys.executable, "-m", "facenms", "export", "--dataset", str(big),
                        "--keep", str(tmp_path / "keep.npy"), "--out", out],
                       capture_output=True, text=True, env=env())
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "%s: cannot write there (%s is not writable)" % (out, small_disk) in r.stderr
