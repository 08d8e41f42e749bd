"""What a freshly forked session does to lock itself in, before it runs any user code.

The template forks the child as PID 1 of a new pid namespace. The child then, in order:
1. unshares mount, ipc, uts (and, unless allowed, network) namespaces;
2. builds a new root on a tmpfs: the system and Python directories bound read-only, a minimal
   /dev, its own /proc, a private size-limited /tmp and /dev/shm, an empty /workspace;
3. pivots into it, keeping the old root aside, and reports "warm" — it may now wait in a pool;
4. on hand-over, binds the session's workspace, detaches the old root for good, makes the new
   root read-only, applies rlimits, becomes an unprivileged user with no capabilities,
   sets no_new_privs, installs the seccomp filter, scrubs the environment, reseeds RNGs;
5. serves cells as an ordinary worker (worker/main.py) on the socket it was given.
Any failure is reported on the socket and the child exits: a session is never half-sandboxed.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from codeinterp.sandbox import linux, seccomp
from codeinterp.sandbox.policy import MiB, SandboxPolicy
from codeinterp.worker import protocol

WORKSPACE = "/workspace"
OLD_ROOT = "/.oldroot"
SESSION_UID = 1000  # inside a user namespace (non-root hosts)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@dataclass(frozen=True)
class ChildSetup:
    """Everything a child needs, computed once in the template."""

    root_dir: str  # an empty host directory to mount the new root's tmpfs on
    read_only_paths: tuple[str, ...]  # host paths bound read-only at the same place
    symlinks: tuple[tuple[str, str], ...]  # (path, target) for merged-/usr style links
    policy: SandboxPolicy
    in_user_namespace: bool  # the template runs in a user namespace (non-root host)


def become_session(sock: int, setup: ChildSetup, *, die_with_parent: bool = True) -> NoReturn:
    """Run in the forked child; never returns.

    `die_with_parent`: the kernel kills us when the template dies. Off for a double-forked
    session, whose parent (the middle process) leaves at once; the template then kills its
    sessions itself when it loses the host.
    """
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _close_fds_except(sock)  # above all the template's control socket
        if die_with_parent:
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        _enter_namespaces(setup.policy)
        _build_root(setup)
        protocol.write_all(sock, protocol.encode({"type": "warm"}))
        request = protocol.read_frame(sock)
        if request is None or request.get("op") != "bind":
            os._exit(0)  # the host closed the pool
        _finish(setup, request)
    except BaseException as exc:  # noqa: BLE001 - report every failure, then leave
        try:
            message = {"type": "setup_failed", "error": f"{type(exc).__name__}: {exc}"}
            protocol.write_all(sock, protocol.encode(message))
        finally:
            os._exit(70)
    from codeinterp.worker.main import Worker

    try:
        Worker(sock, sock, Path(WORKSPACE)).serve()
    finally:
        os._exit(0)


def _close_fds_except(keep: int) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own descriptor, already gone


def _enter_namespaces(policy: SandboxPolicy) -> None:
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
    if not policy.network:
        flags |= linux.CLONE_NEWNET
    linux.unshare(flags)
    linux.sethostname("sandbox")
    # Nothing we mount propagates back to the host; a workspace the host mounts later (in its
    # shared workspace folder, see executors/sandbox.py) still reaches us.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)


def _make_mountpoint(path: str, like: str) -> None:
    if os.path.isdir(like):
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            with open(path, "w"):
                pass


def _build_root(setup: ChildSetup) -> None:
    root = setup.root_dir
    policy = setup.policy
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=16m")
    # The private /tmp first: a read-only path below /tmp (a checkout or venv there) is bound
    # on top of it, not hidden by it.
    os.makedirs(root + "/tmp", exist_ok=True)
    tmp_options = f"mode=1777,size={policy.tmp_bytes},nr_inodes={policy.workspace_inodes}"
    linux.mount("tmpfs", root + "/tmp", "tmpfs", _NOSUID_NODEV, tmp_options)
    for path in setup.read_only_paths:
        _make_mountpoint(root + path, path)
        linux.bind_mount(path, root + path, read_only=True)
    for path, target in setup.symlinks:
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        os.symlink(target, root + path)
    # A minimal /dev: device nodes bound from the host (a user namespace cannot mknod).
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID, "mode=0755,size=1m")
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            _make_mountpoint(f"{dev}/{name}", "/dev/null")
            linux.mount("/dev/" + name, f"{dev}/{name}", None, linux.MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")
    shm_size = min(policy.tmp_bytes, 64 * MiB)
    os.makedirs(dev + "/shm")
    linux.mount("tmpfs", dev + "/shm", "tmpfs", _NOSUID_NODEV, f"mode=1777,size={shm_size}")
    os.makedirs(root + "/proc", exist_ok=True)
    linux.mount("proc", root + "/proc", "proc", _NOSUID_NODEV | linux.MS_NOEXEC)
    os.makedirs(root + WORKSPACE, exist_ok=True)
    os.makedirs(root + OLD_ROOT, exist_ok=True)
    linux.pivot_root(root, root + OLD_ROOT)
    os.chdir("/")


_NOSUID_NODEV = linux.MS_NOSUID | linux.MS_NODEV


def _finish(setup: ChildSetup, request: dict[str, Any]) -> None:
    """Hand-over: attach the workspace, then drop everything we will not need again."""
    workspace = str(request["workspace"])
    linux.bind_mount(OLD_ROOT + workspace, WORKSPACE, read_only=False)
    linux.umount2(OLD_ROOT, linux.MNT_DETACH)
    os.rmdir(OLD_ROOT)
    linux.mount(None, "/", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | _NOSUID_NODEV)
    _apply_rlimits(setup.policy, request.get("rlimit_data"), request.get("rlimit_nproc"))
    if setup.in_user_namespace:
        _become_user_in_new_namespace()
    else:
        _become_user(int(request["uid"]), int(request["gid"]))
    linux.clear_capabilities()
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    if seccomp.supported():
        seccomp.install(seccomp.FilterPolicy(allow_network=setup.policy.network))
    elif not setup.policy.allow_unsandboxed:
        raise OSError("seccomp filters are not supported here")
    os.environ.clear()
    os.environ.update(setup.policy.base_environment())
    os.umask(0o077)
    os.chdir(WORKSPACE)
    _reseed_random()


def _apply_rlimits(policy: SandboxPolicy, data: int | None, nproc: int | None) -> None:
    """Always: no core dumps, bounded files. Where no cgroup could be had: memory and
    process-count limits per process (RLIMIT_DATA spares threads, unlike RLIMIT_AS; the
    process count is per user namespace, so it bounds this session alone)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if data is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (data, data))
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_NOFILE, (policy.max_open_files, policy.max_open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (policy.max_file_bytes, policy.max_file_bytes))


def _become_user(uid: int, gid: int) -> None:
    """Root host: become an unprivileged host uid; the kernel then clears all capabilities."""
    if uid == 0 or gid == 0:
        raise OSError("refusing to run a session as root")
    linux.drop_capability_bounding_set()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _become_user_in_new_namespace() -> None:
    """Non-root host: a nested user namespace where we are uid 1000, mapped to the host user."""
    linux.enter_user_namespace(SESSION_UID, os.getuid(), os.getgid())
    linux.drop_capability_bounding_set()
    os.setresgid(SESSION_UID, SESSION_UID, SESSION_UID)
    os.setresuid(SESSION_UID, SESSION_UID, SESSION_UID)


def _reseed_random() -> None:
    """A forked child inherits the template's RNG state: every session must differ."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))
