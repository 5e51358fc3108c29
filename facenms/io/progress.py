"""The one progress bar: tqdm on stderr when asked for and stderr is a terminal, nothing
otherwise, so a redirected log gets its summary lines and no carriage returns."""
import sys


def progress_bar(enabled, iterable=None, *, total=None, desc, unit, leave=True):
    """A tqdm bar (wrapping `iterable` when given), or None when not enabled or not on a
    terminal (an iterable is then returned as it is)."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                dynamic_ncols=True)
