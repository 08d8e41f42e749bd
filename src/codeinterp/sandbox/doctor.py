"""`codeinterp doctor`: which isolation layers this machine allows, and what a session really got.

The first half probes the machine (each namespace kind tried in a throwaway child, seccomp,
cgroups). The second half opens a real sandbox session and reads its state back from the
host's /proc — never from what the session says about itself.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from typing import TextIO

from codeinterp.sandbox import cgroups, linux, seccomp

NAMESPACE_FLAGS = {
    "user": linux.CLONE_NEWUSER,
    "pid": linux.CLONE_NEWPID,
    "mount": linux.CLONE_NEWNS,
    "network": linux.CLONE_NEWNET,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _try_in_child(flags: int) -> str | None:
    """None if unshare(flags) works in a forked child, else the error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            if os.getuid() != 0 and flags != linux.CLONE_NEWUSER:
                linux.unshare(linux.CLONE_NEWUSER)  # non-root needs a user namespace first
            linux.unshare(flags)
            os.write(write_fd, b"ok")
        except OSError as exc:
            os.write(write_fd, str(exc).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    answer = os.read(read_fd, 4096).decode(errors="replace")
    os.close(read_fd)
    os.waitpid(pid, 0)
    return None if answer == "ok" else answer


def machine_checks() -> list[Check]:
    checks = [
        Check("kernel", True, f"Linux {platform.release()} {platform.machine()}"),
        Check("running as", True, "root" if os.getuid() == 0 else f"uid {os.getuid()}"),
    ]
    for name, flag in NAMESPACE_FLAGS.items():
        error = _try_in_child(flag)
        checks.append(Check(f"{name} namespace", error is None, error or "available"))
    checks.append(
        Check(
            "seccomp filter",
            seccomp.supported(),
            "available" if seccomp.supported() else "not supported by this kernel or CPU",
        )
    )
    support = cgroups.detect()
    have = ", ".join(sorted(support.controllers)) or "none"
    detail = f"{support.version}: {have}" + (f" — {support.reason}" if support.reason else "")
    checks.append(Check("cgroups", support.available, detail))
    quota = os.getuid() == 0
    checks.append(
        Check(
            "workspace quota",
            quota,
            "size- and inode-limited tmpfs per session"
            if quota
            else "needs root; per-file size limit (RLIMIT_FSIZE) only",
        )
    )
    return checks


def _proc_limits(pid: int) -> dict[str, str]:
    wanted = {
        "Max processes", "Max data size", "Max file size", "Max open files", "Max core file size",
    }  # fmt: skip
    found = {}
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            for name in wanted:
                if line.startswith(name):
                    found[name] = line[len(name) :].split()[0]
    return found


def _mounts(pid: int) -> dict[str, str]:
    """Mount point -> "fstype options", for the places a session cares about."""
    found = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            point, options = fields[4], fields[5]
            fstype, super_options = line.split(" - ", 1)[1].split()[0], line.split()[-1]
            if point in ("/", "/usr", "/tmp", "/workspace", "/proc", "/dev/shm"):
                found[point] = f"{fstype} {options} {super_options}"
    return found


def session_checks() -> list[Check]:
    """Open a real sandbox session and read back what it got."""
    from codeinterp.executors.sandbox import SandboxExecutor

    try:
        executor = SandboxExecutor(pool_size=0)
    except Exception as exc:  # report, whatever it is: this is the diagnostic tool
        return [Check("sandbox session", False, str(exc))]
    checks: list[Check] = []
    with executor, executor.open() as session:
        iso = session.isolation
        pid = session.pid
        assert iso is not None and pid is not None
        uid = f"{iso.uid}, uid_map: {iso.uid_map}"
        checks.append(Check("session uid (host view)", iso.uid != 0, uid))
        checks.append(Check("no_new_privs", iso.no_new_privs, str(int(iso.no_new_privs))))
        checks.append(Check("seccomp", iso.seccomp_mode == 2, f"mode {iso.seccomp_mode}"))
        caps = f"effective {iso.cap_effective:#x}, bounding {iso.cap_bounding:#x}"
        checks.append(Check("capabilities", not (iso.cap_effective or iso.cap_bounding), caps))
        for ns, separate in iso.namespaces.items():
            checks.append(Check(f"{ns} namespace", separate, "own" if separate else "host's"))
        group = session.cgroup
        if group is not None:
            for key, value in group.limits_read_back().items():
                checks.append(Check(f"cgroup {key}", True, value))
        else:
            checks.append(Check("cgroup", False, "none: rlimits are the fallback"))
        for key, value in _proc_limits(pid).items():
            checks.append(Check(f"rlimit {key.lower()}", True, value))
        for point, value in _mounts(pid).items():
            checks.append(Check(f"mount {point}", True, value))
        probe = "print(*[line.split(':')[0].strip() for line in open('/proc/net/dev')][2:])"
        net = session.execute(probe)
        interfaces = net.stdout.strip() or (net.error.evalue if net.error else "unknown")
        checks.append(
            Check("network interfaces", True, f"{interfaces} (a network namespace of its own)")
        )
    return checks


def render(title: str, checks: list[Check], colour: bool) -> str:
    def mark(ok: bool) -> str:
        text = "ok " if ok else "-- "
        if colour:
            return ("\x1b[32m" if ok else "\x1b[33m") + text + "\x1b[0m"
        return text

    width = max(len(c.name) for c in checks)
    lines = [title]
    lines += [f"  {mark(c.ok)} {c.name.ljust(width)}  {c.detail}" for c in checks]
    return "\n".join(lines)


def run(stream: TextIO | None = None) -> int:
    """Print both reports; exit status 1 if no sandbox session could be opened."""
    out = stream or sys.stdout
    colour = out.isatty()
    print(render("This machine allows:", machine_checks(), colour), file=out)
    checks = session_checks()
    title = "\nA sandbox session got (read back from the host):"
    print(render(title, checks, colour), file=out)
    return 1 if len(checks) == 1 and not checks[0].ok else 0
