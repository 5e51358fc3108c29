"""Files and processes, the bottom layer: atomic commits of files and folders, the sweep
of dead writers' temporaries and the signal handlers, preflight checks (free space,
output-over-input), pread/pwrite loops. Every other layer may use it; it uses none."""
from .commit import AtomicDir, AtomicFiles
from .journal import recover
from .npy import load as load_npy, load_features, load_indices, load_labels
from .npy import read_header as read_npy_header
from .preflight import check_not_inputs, check_writable, file_identity, user_error
from .stale import sweep_stale
from .syscalls import fsync_dir, pread_all, pwrite_all, sync_filesystem
from .transaction import Transaction

__all__ = ["AtomicDir", "AtomicFiles", "Transaction", "recover", "sweep_stale", "check_not_inputs",
           "check_writable", "file_identity", "user_error", "fsync_dir", "sync_filesystem",
           "pread_all", "pwrite_all", "load_npy", "load_features",
           "load_labels", "load_indices", "read_npy_header"]
