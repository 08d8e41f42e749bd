"""A seccomp-BPF syscall filter for the worker process tree, in pure Python (ctypes, no libseccomp).

`install()` sets no_new_privs and loads a classic BPF program that returns EPERM for syscalls
that reach into the kernel's attack surface or other processes (ptrace, bpf, io_uring, mount and
namespaces, keys, perf, module loading, clock setting, ...) and allows everything else. It is a
deny-list on purpose: user code runs numpy, pandas, threads, multiprocessing and subprocesses,
and an allow-list breaks some of them with every new glibc. The filter is irreversible and
inherited by every child, so only the worker process calls it, never the supervisor.

Arguments are inspected where a whole-syscall deny would break ordinary code:
- socket/socketpair: denying them outright also kills AF_UNIX, which multiprocessing, asyncio
  and subprocess plumbing need; so only the address family is filtered (network namespaces are
  the primary network boundary, this is the second layer).
- clone: allowed (fork and threads use it) unless a CLONE_NEW* namespace bit is set.
- clone3: its flags live in user memory BPF cannot read, so it gets ENOSYS and glibc falls
  back to clone, which we can inspect.
- ioctl: TIOCSTI (pushing keystrokes into a terminal's input) is denied, other ioctls allowed.
- personality: the query (0xffffffff) and PER_LINUX (0) only; e.g. ADDR_NO_RANDOMIZE is denied.

BPF loads 32-bit words; syscall arguments are 64-bit. The filter compares the low word only
(offset of args[i] on little-endian). That is exact here: every argument inspected is an `int`
or `unsigned int` in the kernel (family, ioctl cmd, personality) or has only its low 32 bits
used (clone's flags), so upper bits the caller sets are ignored by the kernel as well.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from dataclasses import dataclass

# Classic BPF opcodes (linux/bpf_common.h) and seccomp return actions (linux/seccomp.h).
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word at offset k of seccomp_data
_JEQ_K, _JGE_K, _JSET_K = 0x15, 0x35, 0x45  # BPF_JMP | BPF_JEQ/JGE/JSET | BPF_K
_RET_K = 0x06
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_NR_OFFSET, _ARCH_OFFSET = 0, 4


def _arg_low(i: int) -> int:
    """Offset of the low 32-bit word of args[i] (little-endian only, see supported())."""
    return 16 + 8 * i


_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP = 38, 22
_SECCOMP_MODE_FILTER = 2  # prctl(PR_SET_SECCOMP, ...) mode
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1  # seccomp(2) operation and flag

_AF_UNIX = 1
_TIOCSTI = 0x5412
_X32_SYSCALL_BIT = 0x40000000
_CLONE_NAMESPACE_FLAGS = (
    0x00000080  # CLONE_NEWTIME
    | 0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

#: Syscalls that always get EPERM. Names missing from an arch's table (iopl and ioperm on
#: aarch64) simply do not exist there.
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig",
    "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "quotactl", "quotactl_fd",
    "keyctl", "add_key", "request_key", "lookup_dcookie",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "acct", "vhangup", "iopl", "ioperm",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
)  # fmt: skip

#: Syscall numbers per `os.uname().machine`, checked against the kernel's uapi headers
#: (asm/unistd_64.h for x86_64, asm-generic/unistd.h for aarch64); see the tests.
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "ioctl": 16, "socket": 41, "socketpair": 53, "clone": 56, "ptrace": 101,
        "personality": 135, "vhangup": 153, "pivot_root": 155, "adjtimex": 159, "chroot": 161,
        "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167,
        "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173, "init_module": 175,
        "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227,
        "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
        "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
        "finit_module": 313, "seccomp": 317, "kexec_file_load": 320, "bpf": 321,
        "userfaultfd": 323,
    },
    "aarch64": {
        "lookup_dcookie": 18, "ioctl": 29, "umount2": 39, "mount": 40, "pivot_root": 41,
        "chroot": 51, "vhangup": 58, "quotactl": 60, "acct": 89, "personality": 92,
        "unshare": 97, "kexec_load": 104, "init_module": 105, "delete_module": 106,
        "clock_settime": 112, "ptrace": 117, "reboot": 142, "settimeofday": 170,
        "adjtimex": 171, "socket": 198, "socketpair": 199, "add_key": 217, "request_key": 218,
        "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225, "perf_event_open": 241,
        "name_to_handle_at": 264, "open_by_handle_at": 265, "clock_adjtime": 266, "setns": 268,
        "process_vm_readv": 270, "process_vm_writev": 271, "finit_module": 273, "seccomp": 277,
        "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294,
    },
}  # fmt: skip
_COMMON = {  # numbers shared by every arch since the 4.x/5.x syscall-table unification
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "mount_setattr": 442, "quotactl_fd": 443,
}  # fmt: skip
for _table in SYSCALLS.values():
    _table.update(_COMMON)

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # linux/audit.h

Insn = tuple[int, int, int, int]  # struct sock_filter: (code, jt, jf, k)


@dataclass(frozen=True)
class FilterPolicy:
    """What the filter lets through beyond the fixed deny-list."""

    #: False: socket()/socketpair() only for AF_UNIX (others get EPERM). True: any family.
    allow_network: bool = False


def _stmt(code: int, k: int) -> Insn:
    return (code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> Insn:
    """Conditional jump: skip `jt` instructions if true, `jf` if false."""
    return (code, jt, jf, k)


def _ret_errno(err: int) -> Insn:
    return _stmt(_RET_K, _RET_ERRNO | err)


_ALLOW, _EPERM = _stmt(_RET_K, _RET_ALLOW), _ret_errno(errno.EPERM)


def _rules(policy: FilterPolicy) -> list[tuple[str, list[Insn]]]:
    """(syscall name, body) pairs. Each body ends in a return, so A still holds nr after it."""
    rules: list[tuple[str, list[Insn]]] = [(name, [_EPERM]) for name in DENIED_SYSCALLS]
    rules.append(("clone3", [_ret_errno(errno.ENOSYS)]))
    rules.append(("clone", [
        _stmt(_LD_W_ABS, _arg_low(0)), _jump(_JSET_K, _CLONE_NAMESPACE_FLAGS, 0, 1),
        _EPERM, _ALLOW,
    ]))  # fmt: skip
    rules.append(("ioctl", [
        _stmt(_LD_W_ABS, _arg_low(1)), _jump(_JEQ_K, _TIOCSTI, 0, 1), _EPERM, _ALLOW,
    ]))  # fmt: skip
    rules.append(("personality", [
        _stmt(_LD_W_ABS, _arg_low(0)), _jump(_JEQ_K, 0, 2, 0),
        _jump(_JEQ_K, 0xFFFFFFFF, 1, 0), _EPERM, _ALLOW,
    ]))  # fmt: skip
    if not policy.allow_network:
        for name in ("socket", "socketpair"):
            rules.append((name, [
                _stmt(_LD_W_ABS, _arg_low(0)), _jump(_JEQ_K, _AF_UNIX, 0, 1), _ALLOW, _EPERM,
            ]))  # fmt: skip
    return rules


def build_filter(policy: FilterPolicy | None = None, machine: str | None = None) -> list[Insn]:
    """The BPF program for `machine` (default: this one) as (code, jt, jf, k) tuples."""
    machine = machine or os.uname().machine
    table = SYSCALLS[machine]
    prog = [
        _stmt(_LD_W_ABS, _ARCH_OFFSET),
        # A foreign ABI (e.g. 32-bit int 0x80 on x86_64) would use other syscall numbers.
        _jump(_JEQ_K, _AUDIT_ARCH[machine], 1, 0),
        _stmt(_RET_K, _RET_KILL_PROCESS),
        _stmt(_LD_W_ABS, _NR_OFFSET),
    ]
    if machine == "x86_64":  # x32 ABI: same arch value, nr | 0x40000000; unused, so refuse it
        prog += [_jump(_JGE_K, _X32_SYSCALL_BIT, 0, 1), _ret_errno(errno.ENOSYS)]
    for name, body in _rules(policy or FilterPolicy()):
        if name in table:
            prog.append(_jump(_JEQ_K, table[name], 0, len(body)))
            prog += body
    prog.append(_ALLOW)
    return prog


def supported() -> bool:
    """True if this kernel has seccomp and this interpreter's ABI has a syscall table here."""
    if sys.platform != "linux" or os.uname().machine not in SYSCALLS:
        return False
    if sys.maxsize < 2**32 or sys.byteorder != "little":  # a 32-bit Python has another ABI
        return False
    try:
        with open("/proc/self/status", "rb") as f:
            return b"\nSeccomp:" in f.read()
    except OSError:
        return False


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _failure(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"seccomp: {what} failed: {os.strerror(err)}")


def install(policy: FilterPolicy | None = None) -> None:
    """Set no_new_privs and install the filter on every thread of this process. Irreversible.

    Uses seccomp(2) with SECCOMP_FILTER_FLAG_TSYNC so threads already running get the filter
    too; falls back to prctl(PR_SET_SECCOMP) only when that is unavailable and the process has
    a single thread. Raises OSError if anything fails (the caller should fail closed).
    """
    if not supported():
        raise OSError(
            errno.ENOSYS,
            f"seccomp: filters not supported here (arch {os.uname().machine!r}, "
            "or no Seccomp: line in /proc/self/status)",
        )
    machine = os.uname().machine
    insns = build_filter(policy, machine)
    packed = b"".join(struct.pack("=HBBI", *insn) for insn in insns)  # struct sock_filter[]
    array = (_SockFilter * len(insns)).from_buffer_copy(packed)
    prog = _SockFprog(len(insns), ctypes.cast(array, ctypes.POINTER(_SockFilter)))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ulong = ctypes.c_ulong
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        raise _failure("prctl(PR_SET_NO_NEW_PRIVS)")
    ret = libc.syscall(
        ctypes.c_long(SYSCALLS[machine]["seccomp"]),
        ulong(_SECCOMP_SET_MODE_FILTER),
        ulong(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(prog),
    )
    if ret == 0:
        return
    if ret > 0:  # TSYNC reports the id of a thread it could not synchronise
        raise OSError(errno.EBUSY, f"seccomp: thread {ret} could not be given the filter")
    if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL):
        raise _failure("seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)")
    if len(os.listdir("/proc/self/task")) > 1:
        raise OSError(errno.ENOSYS, "seccomp: no TSYNC on this kernel and several threads run")
    if libc.prctl(_PR_SET_SECCOMP, ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog)) != 0:
        raise _failure("prctl(PR_SET_SECCOMP)")
