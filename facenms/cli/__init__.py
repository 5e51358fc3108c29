"""The `facenms` command line: one module per command.

Every failure a user can cause (a missing or unreadable file, a bad value, a
file in the way) ends as one line on stderr, ``facenms <command>: error:
...``, and exit code 1; ``FACENMS_DEBUG=1`` shows the traceback instead.
"""
import argparse
import os
import sys
import warnings

# what a user's input or environment can raise; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, EOFError, MemoryError,
               OverflowError, RuntimeError)


def commands():
    """The command modules, imported on first use (inside main's Ctrl-C handling)."""
    from . import (demo, export, extract, index, info, label_issues, report, run, select, sort,
                   train)
    return (select, label_issues, sort, report, demo, export, index, train, extract, run, info)


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line too (`facenms select: error: ...`)."""

    def error(self, message):
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def build_parser():
    p = Parser(prog="facenms", description=(
        "Face-NMS core-set selection for face-recognition training sets."))
    sub = p.add_subparsers(dest="cmd", required=True)
    for command in commands():
        command.add(sub)
    p.commands = sub.choices
    return p


def one_line(e):
    """An exception as one line of text."""
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg += ": %s" % e.filename
    if isinstance(e, MemoryError):
        msg = "out of memory" + (" (%s)" % msg if msg != "MemoryError" else "")
    return msg


def interrupted(cmd=None):
    """Ctrl-C: one line and exit code 130 (128 + SIGINT), as a shell reports it."""
    sys.stderr.write("facenms%s: interrupted\n" % (" " + cmd if cmd else ""))
    sys.exit(130)


def main(argv=None):
    try:
        _main(argv)
    except KeyboardInterrupt:  # while torch and the commands are imported, too
        interrupted()


def _main(argv):
    from .common import CommandError
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command, like its other usage errors
        parser.commands[args.cmd].error("unrecognized arguments: %s" % " ".join(extra))

    def warning_line(message, category, filename, lineno, file=None, line=None):
        (file or sys.stderr).write("facenms %s: warning: %s\n" % (args.cmd, one_line(message)))

    warnings.showwarning = warning_line  # a warning is one line too, not the source line
    try:
        args.func(args)
    except (CommandError,) + USER_ERRORS as e:
        if os.environ.get("FACENMS_DEBUG", "0") not in ("", "0"):
            raise
        raise SystemExit("facenms %s: error: %s" % (args.cmd, one_line(e))) from None
    except KeyboardInterrupt:
        interrupted(args.cmd)


if __name__ == "__main__":
    main()
