"""Thin ctypes wrappers for the Linux calls the sandbox needs and Python 3.11 lacks.

Each function raises OSError with the call's name and the errno's text, so a failure says
which layer could not be applied.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# statvfs f_flag bits -> mount flags: a bind remount must keep the flags the kernel locked.
_ST_TO_MS = {
    1: MS_RDONLY,  # ST_RDONLY
    2: MS_NOSUID,
    4: MS_NODEV,
    8: MS_NOEXEC,
    1024: MS_NOATIME,
    2048: MS_NODIRATIME,
    4096: MS_RELATIME,
}


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def enter_user_namespace(inner_id: int, outer_uid: int, outer_gid: int) -> None:
    """Unshare a user namespace where `inner_id` is our uid and gid, mapped to the outer ones
    (one id each, as an unprivileged process may map only itself)."""
    unshare(CLONE_NEWUSER)
    for name, text in (
        ("setgroups", "deny"),  # required before an unprivileged gid_map
        ("uid_map", f"{inner_id} {outer_uid} 1"),
        ("gid_map", f"{inner_id} {outer_gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {source or fstype} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    sys_pivot_root = {"x86_64": 155, "aarch64": 41}[os.uname().machine]
    result = _libc.syscall(ctypes.c_long(sys_pivot_root), new_root.encode(), put_old.encode())
    _check(result, "pivot_root")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = (ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5))
    return _check(_libc.prctl(ctypes.c_int(option), *args), f"prctl({option})")


def sethostname(name: str) -> None:
    data = name.encode()
    _check(_libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname")


def locked_mount_flags(path: str) -> int:
    """The flags of the mount holding `path`, to repeat in a bind remount of it."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if f_flag & st)


def bind_mount(source: str, target: str, *, read_only: bool) -> None:
    """Bind `source` on `target`, then remount it read-only (or not) without suid/devices."""
    mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | locked_mount_flags(target)
    if read_only:
        flags |= MS_RDONLY
    else:
        flags &= ~MS_RDONLY
    mount(None, target, None, flags)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (a user namespace's creator keeps
    all of them even as a non-zero uid, so a uid change alone is not enough there)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two data words
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_capability_bounding_set() -> None:
    """No process in the session may ever gain a capability again, even through exec."""
    for cap in range(last_capability() + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            pass
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
