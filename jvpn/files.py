"""Files that hold secrets or state, and who else may touch them.

Two kinds, two rules (docs/decisions.md, "Secrets on disk: refuse, not warn"):

- Files the operator provides (private key, cluster key, a config file with
  an inline key, and the config files that name them): checked, never
  modified. A secret that group or others may read or write, or that another
  user owns, is refused with a one-line error that names the file and the
  fix; a config file that group or others may write is refused the same way,
  and so is a policy file in a directory they may write (read_config).
  Symlinks are followed: the checks apply to the file actually read (fstat of
  the open descriptor), so a link into a place another user controls fails on
  the target's owner or mode.
- Files the daemon creates (session store and its journals, events file,
  lock files): created 0600 by ``open(O_CREAT, 0600)`` itself, so no umask
  window exists between creation and a chmod; never through a symlink (a
  planted link would make root write where the link points); an existing one
  must be ours with one link, and is tightened to 0600 if an older version or
  an operator left it looser.

Directories that hold daemon files (StateDir, the run dir): created 0700 if
absent; refused if group or others may write them (they could plant or swap
the files above) or if another user owns them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from jvpn.errors import JvpnError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class UnsafeFile(JvpnError):
    """A file or directory whose owner or mode lets another user read a
    secret or replace state. The message is one line and ends with the fix."""


def _trusted_owner(uid: int) -> bool:
    # root may own what a root daemon reads; so may the user running jvpn
    return uid in (0, os.geteuid())


def _mode(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}"


def check_secret(path: Path, st: os.stat_result) -> None:
    """Refuse a secret the operator provides unless it is a regular file owned
    by root or us that nobody else may read or write."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{path} holds a secret key but is not a regular file")
    if not _trusted_owner(st.st_uid):
        raise UnsafeFile(f"{path} holds a secret key but is owned by uid {st.st_uid}, who can "
                         f"read or replace it: run `chown root {path} && chmod 600 {path}`")
    if st.st_mode & 0o077:
        raise UnsafeFile(f"{path} holds a secret key and is accessible to group or others "
                         f"({_mode(st)}): run `chmod 600 {path}`")


def check_not_writable_by_others(path: Path, st: os.stat_result) -> None:
    """Refuse a config file someone other than root or us may change."""
    if not _trusted_owner(st.st_uid):
        raise UnsafeFile(f"{path} is owned by uid {st.st_uid}, who can change what jvpn does: "
                         f"run `chown root {path}`")
    if st.st_mode & 0o022:
        raise UnsafeFile(f"{path} is writable by group or others ({_mode(st)}): "
                         f"run `chmod go-w {path}`")


def check_dir_not_writable_by_others(path: Path, st: os.stat_result) -> None:
    """Refuse the directory of a config file if someone other than root or
    us may replace the file in it: owned by another user, or writable by
    group or others without the sticky bit (with it, only the file's owner,
    checked on the file itself, may rename or remove it)."""
    if not _trusted_owner(st.st_uid):
        raise UnsafeFile(f"{path} is owned by uid {st.st_uid}, who can replace the files in it: "
                         f"run `chown root {path}`")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeFile(f"{path} is writable by group or others ({_mode(st)}), who can "
                         f"replace the files in it: run `chmod go-w {path}`")


def read_config(path: Path) -> str:
    """The text of a file the operator provides that sets what jvpn does
    (a policy file), checked on the very descriptor it is read from (no
    window between check and read), in directories nobody else may swap it
    in (the one the file actually is in, symlinks followed, and every one
    above it), and still the file at that path once they are checked."""
    with open(path, encoding="utf-8-sig") as f:
        st = os.fstat(f.fileno())
        check_not_writable_by_others(path, st)
        real = Path(os.path.realpath(path))
        for d in real.parents:  # any of them could be renamed away under the file
            check_dir_not_writable_by_others(d, os.stat(d))
        # the file read is the one at that safe path now (not one swapped in
        # before the directories were checked)
        now = os.stat(real)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafeFile(f"{path} was replaced while it was read: read it again")
        return f.read()


def read_secret(path: Path) -> str:
    """The text of a secret file the operator provides, checked on the very
    descriptor it is read from (no window between check and read)."""
    with open(path, encoding="utf-8-sig") as f:
        check_secret(path, os.fstat(f.fileno()))
        return f.read()


def private_dir(path: Path) -> Path:
    """``path`` as a directory only we may write: created 0700 if absent;
    an existing one writable by group or others, or owned by another user,
    is refused (files in it could be planted or replaced)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    st = os.stat(path)  # follows a symlinked StateDir: the checks are on the real directory
    problem = private_dir_problem(path, st)
    if problem is not None:
        raise UnsafeFile(problem)
    return path


def private_dir_problem(path: Path, st: os.stat_result) -> str | None:
    """Why ``path`` (stat ``st``) cannot hold daemon files, or None: shared
    by :func:`private_dir` and `gateway check` (which creates nothing)."""
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if not _trusted_owner(st.st_uid):
        return (f"{path} is owned by uid {st.st_uid}, who can replace the files in it: "
                f"run `chown root {path} && chmod 700 {path}`")
    if st.st_mode & 0o022:
        return (f"{path} is writable by group or others ({_mode(st)}), who can plant "
                f"or replace the files in it: run `chmod 700 {path}`")
    return None


def open_private(path: Path, flags: int, *, create: bool = True) -> int:
    """A descriptor on a file only we may read and write: created 0600 from
    the start, never through a symlink; an existing file must be ours, with
    one link, and is tightened to 0600 if it is looser. The caller closes it."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, PRIVATE_FILE_MODE)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symlink: refused (remove it)") from None
        raise
    try:
        _check_own_file(path, os.fstat(fd), fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_own_file(path: Path, st: os.stat_result, owner: int) -> None:
    """The rule for an existing file a daemon running as ``owner`` writes:
    a regular file of ``owner``'s with one link. The one rule for
    open_private (``owner``: us) and for `check` (the uid `up` runs as)."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{path} is not a regular file")
    if st.st_uid != owner:
        raise UnsafeFile(f"{path} is owned by uid {st.st_uid}, not by us "
                         f"(uid {owner}): remove it or `chown {owner} {path}`")
    if st.st_nlink != 1:  # a hard link to a file elsewhere: we would write into that one
        raise UnsafeFile(f"{path} has {st.st_nlink} hard links: remove it")


def _check_own_file(path: Path, st: os.stat_result, fd: int) -> None:
    check_own_file(path, st, os.geteuid())
    if stat.S_IMODE(st.st_mode) != PRIVATE_FILE_MODE:
        # Ours already; only ever narrows to owner read/write (or restores
        # owner access that an odd umask took away at creation).
        os.fchmod(fd, PRIVATE_FILE_MODE)


def tighten_if_present(path: Path) -> None:
    """Apply :func:`open_private`'s checks to an existing file without
    creating it (SQLite's -wal/-shm/-journal left by a crash)."""
    if os.path.lexists(path):
        os.close(open_private(path, os.O_RDONLY, create=False))
