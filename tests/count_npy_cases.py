"""Count how every malformed .npy of tests/test_npy_files.py fares in every slot of every
command, by class: one line naming the file, another one-line error, a traceback, or a
silent exit 0. Run against any tree:

    PYTHONPATH=TREE python tests/count_npy_cases.py
"""
import collections
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import test_npy_files as t  # noqa: E402
from facenms import cli  # noqa: E402
from facenms.data import synthetic  # noqa: E402


def outcome(argv, bad, cmd):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit as e:
            msg = str(e.code)
            if msg.startswith("facenms %s: error: %s: " % (cmd, bad)) and "\n" not in msg:
                return "one line naming the file"
            return "other one-line error"
        except BaseException:  # what a user would see as a traceback
            return "traceback"
    return "exit 0 (silent success)"


def main():
    d = Path(tempfile.mkdtemp())
    for name, slot in (("f", "features"), ("l", "labels"), ("s", "scores"), ("k", "keep")):
        np.save(d / ("%s.npy" % name), t.good(slot))
    synthetic.make_image_folder(d / "img", num_identities=4, images_per_identity=(10, 10),
                                size=12, seed=1)
    (d / "out").mkdir()
    table = collections.defaultdict(collections.Counter)
    for cmd, opt, slot in t.SLOTS:
        for name, make in t.BAD.items():
            data = make(slot)
            if data is None:
                continue
            bad = d / ("bad-%s.npy" % slot)
            bad.write_bytes(data)
            table[name][outcome(t.argv(cmd, d, opt, bad), bad, cmd)] += 1
            for p in (d / "out").iterdir():  # a command that wrote: counted, then cleared
                table[name]["wrote an output"] += 1
                os.remove(p) if p.is_file() else __import__("shutil").rmtree(p)
    total = collections.Counter()
    for name in t.BAD:
        row = table[name]
        total.update(row)
        print("%-36s %s" % (name, ", ".join("%s: %d" % kv for kv in sorted(row.items()))))
    print("%-36s %s" % ("ALL", ", ".join("%s: %d" % kv for kv in sorted(total.items()))))


if __name__ == "__main__":
    main()
