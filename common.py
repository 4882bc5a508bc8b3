"""Small helpers every script shares: crash-safe file writes, argparse with one-line errors, and the prepared-data
format constants that data/tokens.py writes and dataloader.py reads (here so data preparation needs no torch)."""

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

TOKEN_FORMAT = "solgpt-tokens-v1"
TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}  # meta.json "dtype" -> numpy type of train.bin/val.bin


def fsync_dir(path):
    """Make a rename durable: the directory entry lives in the directory, not in the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write_fn):
    """Call write_fn(binary file object) on a temp file next to path, fsync it, then rename it over path.

    A crash at any moment leaves either the old file or the new one, never a torn one: the temp file is in the same
    directory (so os.replace is an atomic rename on one file system) and is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")  # atomic_write's temp files: .NAME.tmpPID


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def sweep_stale_temp_files(directory):
    """Remove the temp files atomic_write leaves when its process is killed mid-write (the file it was replacing
    is intact). Only files of processes that no longer run: a live writer's temp file is its work in progress.
    Returns the names removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        m = TEMP_NAME.match(path.name)
        if m and path.is_file() and not path.is_symlink() and not pid_alive(int(m["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error here: `error: ...`, exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def run_main(main):
    """sys.exit(main()) for a script that prints results as it goes: when the reader closes the pipe early
    (`python classify.py ... | head`), end quietly with a shell's SIGPIPE status, as cat or grep do, instead of a
    BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()  # what is still buffered (a print without flush=True) fails here, not at exit
    except BrokenPipeError:
        # Python flushes stdout once more at exit; pointed at /dev/null, that flush cannot fail a second time
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)  # 128 + SIGPIPE
    sys.exit(code)
