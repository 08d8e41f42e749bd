"""Per-session cgroups: hard memory / process-count / CPU limits and a whole-tree kill.

Why cgroups: `RLIMIT_AS` breaks threads and `RLIMIT_NPROC` is ignored for root, while a cgroup
limits a session's whole process tree, makes the kernel OOM-kill inside it (not elsewhere on the
host), and lists every process to kill, daemonised ones included.

Groups nest under our *own* cgroup (`<our cgroup>/codeinterp/<pid>-<name>`, per controller on
v1), so the limits and accounting of whatever contains us (a container, a service, a user slice)
still cover the sessions. `detect()` only looks and never raises: it says why something is
unusable, so `codeinterp doctor` can report it and callers can fall back.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from codeinterp.errors import CodeinterpError, ConfigError

CONTROLLERS = ("memory", "pids", "cpu")
V2_LEAF = "codeinterp-supervisor"  # v2: where we move ourselves ("no internal processes" rule)
CPU_PERIOD_US = 100_000
_FILES = {  # what: (controller, v1 file, v2 file)
    "memory": ("memory", "memory.limit_in_bytes", "memory.max"),
    "swap": ("memory", "memory.memsw.limit_in_bytes", "memory.swap.max"),
    "pids": ("pids", "pids.max", "pids.max"),
    "cpu_period": ("cpu", "cpu.cfs_period_us", ""),
    "cpu": ("cpu", "cpu.cfs_quota_us", "cpu.max"),
    "memory_current": ("memory", "memory.usage_in_bytes", "memory.current"),
    "memory_peak": ("memory", "memory.max_usage_in_bytes", "memory.peak"),
    "pids_current": ("pids", "pids.current", "pids.current"),
}


class CgroupError(CodeinterpError, OSError):
    """A session cgroup could not be created, configured or removed; the message says why."""


@dataclass(frozen=True)
class CgroupLimits:
    """Limits for one session; None leaves a resource unlimited (the group still accounts it)."""

    memory_bytes: int | None = None
    pids_max: int | None = None
    cpu_quota: float | None = None  # CPUs, e.g. 1.0 = one core


@dataclass(frozen=True)
class CgroupSupport:
    """What this machine lets us do; `bases` maps each usable controller to its groups' parent."""

    version: Literal["v1", "v2", "none"]
    bases: Mapping[str, Path] = field(default_factory=dict)
    reason: str = ""  # why something is unavailable; empty when all of CONTROLLERS are usable
    freezer: Path | None = None  # v1 freezer base: stops forks while kill() lists and signals
    v2_move_self: Path | None = None  # v2: leaf we must move into before enabling controllers

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.bases)

    @property
    def available(self) -> bool:
        return bool(self.bases)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _own_dir(mount_root: str, mountpoint: str, own: str) -> Path:
    """Our cgroup's directory; under a cgroup namespace `own` may include the mount's root."""
    if mount_root != "/" and (own + "/").startswith(mount_root + "/"):
        own = own[len(mount_root) :]
    return Path(mountpoint) / own.lstrip("/")


def detect(proc_self: str = "/proc/self") -> CgroupSupport:
    """Find the cgroup version in use and the controllers we may use. Never raises."""
    try:
        return _detect(proc_self)
    except Exception as exc:  # a strange /proc or cgroupfs must not stop a session from starting
        return CgroupSupport("none", reason=f"cannot inspect cgroups: {exc!r}")


def _detect(proc_self: str) -> CgroupSupport:
    try:
        mountinfo = _read(Path(proc_self, "mountinfo")).splitlines()
        lines = _read(Path(proc_self, "cgroup")).splitlines()
        own = {k: p for _, k, p in (ln.split(":", 2) for ln in lines)}
    except (OSError, ValueError) as exc:
        return CgroupSupport("none", reason=f"cannot read {proc_self}/cgroup or mountinfo: {exc}")
    v1: dict[str, Path] = {}  # controller -> our directory in its hierarchy
    v2: Path | None = None
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        mnt, fs = left.split(), right.split()
        if len(mnt) < 5 or len(fs) < 3:
            continue
        if fs[0] == "cgroup2" and "" in own:
            v2 = _own_dir(mnt[3], mnt[4], own[""])
        for c in fs[2].split(",") if fs[0] == "cgroup" else ():
            path = next((p for k, p in own.items() if c in k.split(",")), None)
            if path is not None:
                v1.setdefault(c, _own_dir(mnt[3], mnt[4], path))
    if not any(c in v1 for c in CONTROLLERS):
        if v2 is None:
            return CgroupSupport("none", reason="no cgroup filesystem is mounted")
        return _detect_v2(v2)
    bases: dict[str, Path] = {}
    problems = []
    for c in (*CONTROLLERS, "freezer"):
        base = v1[c] / "codeinterp" if c in v1 else None
        if base is None or not base.parent.is_dir():
            problems.append(f"cgroup v1 {c} controller is not mounted")
        elif not os.access(base if base.exists() else base.parent, os.W_OK):
            problems.append(
                f"cgroup v1 {c} hierarchy is not writable by uid {os.geteuid()} "
                f"({base.parent}) — run as root or delegate a cgroup subtree"
            )
        else:
            bases[c] = base
    freezer = bases.pop("freezer", None)  # optional: kill() only converges faster with it
    problems = [p for p in problems if " freezer " not in p]
    return CgroupSupport("v1", bases, "; ".join(problems), freezer)


def _detect_v2(cg: Path) -> CgroupSupport:
    """v2: our children need our subtree_control, which a non-root cgroup with processes refuses."""
    if cg.name == V2_LEAF:  # we, or the codeinterp that started us, already moved out of `cg`
        cg = cg.parent
    try:
        offered = set(_read(cg / "cgroup.controllers").split())
        enabled = set(_read(cg / "cgroup.subtree_control").split())
        procs = {int(p) for p in _read(cg / "cgroup.procs").split()}
    except (OSError, ValueError) as exc:
        return CgroupSupport("v2", reason=f"cannot read cgroup v2 directory {cg}: {exc}")
    usable = [c for c in CONTROLLERS if c in offered]
    problems = [f"controller {c} is not delegated to {cg}" for c in CONTROLLERS if c not in usable]
    files = (cg, cg / "cgroup.procs", cg / "cgroup.subtree_control")
    move_self = None
    if not all(os.access(f, os.W_OK) for f in files):
        problems.append(f"cgroup v2 directory {cg} is not writable by uid {os.geteuid()}")
        usable = []
    elif procs and not set(usable) <= enabled and (cg / "cgroup.type").exists():  # not the root
        if procs == {os.getpid()}:
            move_self = cg / V2_LEAF
        else:
            problems.append(
                f"{cg} holds {len(procs)} other processes, and cgroup v2's no-internal-processes"
                " rule then forbids enabling controllers for its children"
            )
            usable = []
    reason = "; ".join(problems)
    if reason:
        reason += " — run codeinterp in its own delegated cgroup, e.g. `systemd-run --user"
        reason += " --scope -p Delegate=yes codeinterp ...`"
    return CgroupSupport("v2", {c: cg / "codeinterp" for c in usable}, reason, None, move_self)


def _prepare_v2(base: Path, controllers: list[str], move_self: Path | None) -> None:
    """Leave our own cgroup if needed, then enable the controllers for `base` and its children."""
    if move_self is not None and str(os.getpid()) in _read(base.parent / "cgroup.procs").split():
        move_self.mkdir(exist_ok=True)
        _write(move_self / "cgroup.procs", str(os.getpid()))
    base.mkdir(exist_ok=True)
    for parent in (base.parent, base):
        enabled = _read(parent / "cgroup.subtree_control").split()
        for c in (c for c in controllers if c not in enabled):
            _write(parent / "cgroup.subtree_control", f"+{c}")


def _clear_leftover(path: Path) -> None:
    """Remove a group named like ours: a process that had our pid before us was killed before
    it could clean up (pids are reused). One with processes inside is not ours to take."""
    inside = _read(path / "cgroup.procs").split()
    if inside:
        raise CgroupError(
            f"cgroup {path} already exists and holds processes {', '.join(inside)}; it is not "
            "this process's: remove it (after ending those processes) or use another hierarchy"
        )
    path.rmdir()


class SessionCgroup:
    """One session's group(s): one per controller (and the freezer) on v1, a single one on v2."""

    def __init__(self, version: str, groups: dict[str, Path], freezer: Path | None) -> None:
        self.version, self.groups, self.freezer = version, groups, freezer
        self.paths = sorted({*groups.values(), *([freezer] if freezer else [])})
        self.removed = False

    @classmethod
    def create(
        cls, name: str, limits: CgroupLimits, support: CgroupSupport | None = None
    ) -> SessionCgroup:
        """Make the group(s) and apply `limits`; CgroupError if a limited controller is unusable.

        Group names start with our pid, so executors in different processes never clash.
        """
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"cgroup name {name!r} must be a single non-empty path component")
        if limits.cpu_quota is not None and limits.cpu_quota <= 0:
            raise ConfigError("cpu_quota must be a positive number of CPUs")
        s = support or detect()
        wanted = {"memory": limits.memory_bytes, "pids": limits.pids_max, "cpu": limits.cpu_quota}
        missing = [c for c, v in wanted.items() if v is not None and c not in s.bases]
        if missing or not s.available:
            what = ", ".join(missing) or "anything"
            raise CgroupError(f"cannot limit {what} with cgroups: {s.reason or 'unsupported'}")
        leaf = f"{os.getpid()}-{name}"
        self = cls(
            s.version, {c: b / leaf for c, b in s.bases.items()}, s.freezer and s.freezer / leaf
        )
        planned, self.paths = self.paths, []  # paths holds what exists, for remove() on failure
        try:
            for path in planned:
                for attempt in range(5):  # another process's remove() may rmdir an empty base
                    if s.version == "v2":
                        _prepare_v2(path.parent, sorted(s.bases), s.v2_move_self)
                    path.parent.mkdir(exist_ok=True)
                    try:
                        path.mkdir()
                        break
                    except FileExistsError:
                        _clear_leftover(path)  # then try again
                    except FileNotFoundError:
                        if attempt == 4:
                            raise
                self.paths.append(path)
            self._apply(limits)
        except OSError as exc:
            self.remove()
            raise CgroupError(f"cannot set up cgroup {leaf} with {limits}: {exc}") from exc
        return self

    def _file(self, what: str) -> Path | None:
        ctl, v1, v2 = _FILES[what]
        name = v1 if self.version == "v1" else v2
        return self.groups[ctl] / name if name and ctl in self.groups else None

    def _set(self, what: str, value: object) -> None:
        if (path := self._file(what)) is not None:
            _write(path, str(value))

    def _apply(self, lim: CgroupLimits) -> None:
        if lim.memory_bytes is not None:
            self._set("memory", lim.memory_bytes)
            swap = self._file("swap")  # no escape into swap: v1 counts memory+swap, v2 swap only
            if swap is not None and swap.exists():
                _write(swap, str(lim.memory_bytes) if self.version == "v1" else "0")
        if lim.pids_max is not None:
            self._set("pids", lim.pids_max)
        if lim.cpu_quota is not None:
            quota = max(1000, round(lim.cpu_quota * CPU_PERIOD_US))
            self._set("cpu_period", CPU_PERIOD_US)
            self._set("cpu", quota if self.version == "v1" else f"{quota} {CPU_PERIOD_US}")

    def add(self, pid: int) -> None:
        """Move process `pid` (and so its future children) into every group."""
        if pid <= 1 or pid == os.getpid():
            raise ConfigError(f"refusing to put pid {pid} (init or the supervisor) in a session")
        for path in self.paths:
            try:
                _write(path / "cgroup.procs", str(pid))
            except OSError as exc:
                raise CgroupError(f"cannot move pid {pid} into {path}: {exc}") from exc

    def pids(self) -> list[int]:
        """Processes now inside: a union over the groups, so a half-done `add` is still seen."""
        found: set[int] = set()
        for path in self.paths:
            try:
                found.update(int(p) for p in _read(path / "cgroup.procs").split())
            except FileNotFoundError:
                pass
        return sorted(found)

    def _freeze(self, on: bool) -> None:
        """Frozen processes cannot fork, so one listing catches the whole tree."""
        if self.version == "v2":
            path, file, value, state = self.paths[0], "cgroup.freeze", str(int(on)), "cgroup.events"
            done = f"frozen {value}"
        elif self.freezer:
            path, file, state = self.freezer, "freezer.state", "freezer.state"
            value = done = "FROZEN" if on else "THAWED"
        else:
            return
        try:
            _write(path / file, value)
            deadline = time.monotonic() + 1.0
            while done not in _read(path / state) and time.monotonic() < deadline:
                time.sleep(0.001)
        except OSError:
            pass  # without a freezer the SIGKILL loop still converges, only in more rounds

    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process inside (never init, never us); True once the group is empty."""
        deadline = time.monotonic() + timeout
        kill_file = self.paths[0] / "cgroup.kill" if self.paths else None
        if self.version == "v2" and kill_file is not None and kill_file.exists():
            try:
                _write(kill_file, "1")  # the kernel kills the whole group at once (>= 5.14)
            except OSError:
                pass
        while pids := self.pids():
            if time.monotonic() > deadline:
                return False
            self._freeze(True)
            for pid in self.pids():
                if pid > 1 and pid != os.getpid():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self._freeze(False)  # frozen tasks die only once thawed
            if self.pids() == pids:
                time.sleep(0.002)
        return True

    def memory_events(self) -> dict[str, int]:
        """Memory trouble counters: v2 memory.events; v1 memory.oom_control, failcnt and peaks."""
        mem = self.groups.get("memory")
        v1 = ["memory.oom_control", "memory.failcnt", "memory.max_usage_in_bytes"]
        out: dict[str, int] = {}
        for name in ["memory.events"] if self.version == "v2" else [*v1, "memory.limit_in_bytes"]:
            try:
                text = _read(mem / name) if mem else ""
            except OSError:
                continue
            for key, _, value in (line.rpartition(" ") for line in text.splitlines()):
                if value.isdigit():
                    out[key or name.removeprefix("memory.")] = int(value)
        return out

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process here, so the session can say why it died."""
        ev = self.memory_events()
        if "oom_kill" in ev:
            return ev["oom_kill"] > 0
        # Old v1 kernels lack the counter: failures with the peak at the limit are the best sign.
        peak, limit = ev.get("max_usage_in_bytes", 0), ev.get("limit_in_bytes", 0)
        return ev.get("failcnt", 0) > 0 and peak >= limit * 0.95

    def _report(self, whats: tuple[str, ...]) -> dict[str, str]:
        paths = [(w, self._file(w)) for w in whats]
        return {w: _read(p).strip() for w, p in paths if p is not None and p.exists()}

    def usage(self) -> dict[str, int]:
        """Current and peak memory and the process count, for `codeinterp doctor`."""
        got = self._report(("memory_current", "memory_peak", "pids_current"))
        return {k: int(v) for k, v in got.items() if v.isdigit()}

    def limits_read_back(self) -> dict[str, str]:
        """The limit files as the kernel reports them (it may round): what a session really got."""
        got = self._report(("memory", "swap", "pids", "cpu_period", "cpu"))
        return {_FILES[w][1 if self.version == "v1" else 2]: v for w, v in got.items()}

    def remove(self) -> None:
        """Kill leftovers, then delete the group(s) (retrying while tasks exit). Idempotent."""
        if self.removed:
            return
        self.kill()
        for path in self.paths:
            deadline = time.monotonic() + 2.0
            while path.exists():
                try:
                    path.rmdir()
                except OSError as exc:  # EBUSY while killed tasks finish exiting
                    if exc.errno not in (errno.EBUSY, errno.ENOENT) or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {path}: {exc}") from exc
                    time.sleep(0.005)
            try:  # leave no empty base behind, least of all in a cgroup that is not ours
                path.parent.rmdir()
            except OSError:
                pass  # other sessions still use it
        self.removed = True

    def __enter__(self) -> SessionCgroup:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
