"""Session cgroups: limits the kernel really enforces, a whole-tree kill, and no leftovers.

The kernel tests need a writable cgroup hierarchy (root here; a delegated subtree elsewhere) and
skip with `detect()`'s reason otherwise. The detection tests run anywhere on a fake /proc.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeinterp.sandbox.cgroups import (
    V2_LEAF,
    CgroupError,
    CgroupLimits,
    CgroupSupport,
    SessionCgroup,
    detect,
)
from tests.conftest import process_gone

MiB = 1 << 20
# The child blocks on stdin until it is inside the group, so nothing it does escapes the limits.
GATED = "import sys; sys.stdin.readline(); exec(sys.argv[1])"


@pytest.fixture(scope="module")
def support() -> CgroupSupport:
    return detect()


def need(support: CgroupSupport, *controllers: str) -> None:
    missing = [c for c in controllers if c not in support.controllers]
    if missing:
        pytest.skip(f"cgroup {', '.join(missing)} unusable here: {support.reason}")


Procs = list[subprocess.Popen[bytes]]


@pytest.fixture
def procs() -> Iterator[Procs]:
    started: Procs = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def start_in(
    cg: SessionCgroup, procs: Procs, argv: list[str], **kw: Any
) -> subprocess.Popen[bytes]:
    """Start `argv` blocked on stdin, move it into `cg`, then let it go."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, **kw)
    procs.append(p)
    cg.add(p.pid)
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.flush()
    return p


def python_in(cg: SessionCgroup, procs: Procs, code: str, **kw: Any) -> subprocess.Popen[bytes]:
    return start_in(cg, procs, [sys.executable, "-c", GATED, code], **kw)


def test_detect_never_raises_without_cgroups(tmp_path: Path) -> None:
    s = detect(str(tmp_path))  # no mountinfo, no cgroup file
    assert s.version == "none" and not s.available and s.reason
    (tmp_path / "mountinfo").write_text("22 1 0:5 / /proc rw - proc proc rw\n")
    (tmp_path / "cgroup").write_text("0::/\n")
    s = detect(str(tmp_path))
    assert s.version == "none" and "no cgroup" in s.reason


def fake_v2(tmp_path: Path, procs: str, controllers: str = "cpu memory pids io") -> Path:
    proc, own = tmp_path / "proc", tmp_path / "cg" / "user.slice" / "app.scope"
    proc.mkdir()
    own.mkdir(parents=True)
    (proc / "mountinfo").write_text(f"41 31 0:38 / {tmp_path / 'cg'} rw - cgroup2 cgroup2 rw\n")
    (proc / "cgroup").write_text("0::/user.slice/app.scope\n")
    for name, text in [
        ("cgroup.controllers", controllers),
        ("cgroup.subtree_control", ""),
        ("cgroup.procs", procs),
        ("cgroup.type", "domain"),
    ]:
        (own / name).write_text(text + "\n")
    return own


def test_detect_v2_moves_only_itself_out_of_its_cgroup(tmp_path: Path) -> None:
    own = fake_v2(tmp_path, str(os.getpid()))
    s = detect(str(tmp_path / "proc"))
    assert s.version == "v2" and s.controllers == {"memory", "pids", "cpu"} and not s.reason
    assert s.bases["memory"] == own / "codeinterp" and s.v2_move_self == own / V2_LEAF


def test_create_on_v2_leaves_its_cgroup_then_writes_v2_limit_files(tmp_path: Path) -> None:
    """On a fake tree: plain files stand in for the kernel's, so only our writes are checked."""
    own = fake_v2(tmp_path, str(os.getpid()))
    (own / "codeinterp").mkdir()  # the kernel would create its interface files; we can't
    (own / "codeinterp" / "cgroup.subtree_control").write_text("")
    s = detect(str(tmp_path / "proc"))
    cg = SessionCgroup.create("s1", CgroupLimits(64 * MiB, 20, 0.2), s)
    assert (own / V2_LEAF / "cgroup.procs").read_text() == str(os.getpid())
    assert (own / "codeinterp" / "cgroup.subtree_control").exists()
    assert cg.paths == [own / "codeinterp" / f"{os.getpid()}-s1"]
    assert cg.limits_read_back() == {
        "memory.max": str(64 * MiB),
        "pids.max": "20",
        "cpu.max": "20000 100000",
    }


def test_detect_v2_refuses_a_cgroup_shared_with_other_processes(tmp_path: Path) -> None:
    fake_v2(tmp_path, f"{os.getpid()}\n4242")
    s = detect(str(tmp_path / "proc"))
    assert not s.available and "no-internal-processes" in s.reason and "Delegate=yes" in s.reason


def test_detect_v2_names_undelegated_controllers(tmp_path: Path) -> None:
    fake_v2(tmp_path, "", controllers="memory")
    s = detect(str(tmp_path / "proc"))
    assert s.controllers == {"memory"} and "pids is not delegated" in s.reason
    with pytest.raises(CgroupError, match="cannot limit pids"):
        SessionCgroup.create("x", CgroupLimits(pids_max=5), s)


def test_limits_read_back_and_remove_leaves_nothing(support: CgroupSupport) -> None:
    need(support, "memory", "pids", "cpu")
    t0 = time.perf_counter()
    cg = SessionCgroup.create("readback", CgroupLimits(64 * MiB, 20, 0.5), support)
    created = time.perf_counter()
    got = cg.limits_read_back()
    if cg.version == "v1":
        assert got["memory.limit_in_bytes"] == str(64 * MiB)
        assert got["cpu.cfs_quota_us"] == "50000" and got["cpu.cfs_period_us"] == "100000"
    else:
        assert got["memory.max"] == str(64 * MiB) and got["cpu.max"] == "50000 100000"
    assert got["pids.max"] == "20"
    assert cg.usage()["pids_current"] == 0
    assert all(p.is_dir() for p in cg.paths)
    cg.remove()
    removed = time.perf_counter()
    print(f"create+limit {1e3 * (created - t0):.2f} ms, remove {1e3 * (removed - created):.2f} ms")
    assert not any(p.exists() for p in cg.paths)
    cg.remove()  # idempotent


def test_a_leftover_group_of_a_dead_process_with_our_pid_is_replaced(
    support: CgroupSupport, procs: Procs
) -> None:
    """A supervisor killed with SIGKILL leaves its groups; a later process given the same pid
    (pids are reused) must still open sessions under the same names."""
    need(support, "pids")
    first = SessionCgroup.create("reused", CgroupLimits(pids_max=20), support)
    first.removed = True  # as if its process had died without cleaning up
    second = SessionCgroup.create("reused", CgroupLimits(pids_max=30), support)
    try:
        assert second.paths == first.paths
        assert second.limits_read_back()["pids.max"] == "30"
        busy = python_in(second, procs, "import time; time.sleep(60)")
        with pytest.raises(CgroupError, match="holds processes"):
            SessionCgroup.create("reused", CgroupLimits(pids_max=20), support)
        assert second.pids() == [busy.pid]  # a live group is never taken over
    finally:
        second.remove()
    assert not any(p.exists() for p in second.paths)


def test_memory_limit_oom_kills_inside_the_group(support: CgroupSupport, procs: Procs) -> None:
    need(support, "memory")
    with SessionCgroup.create("oom", CgroupLimits(memory_bytes=64 * MiB), support) as cg:
        p = python_in(cg, procs, "b = bytearray(256 << 20); import time; time.sleep(5)")
        assert p.wait(timeout=30) == -9
        assert cg.oom_killed(), cg.memory_events()


def test_pids_max_makes_fork_fail_with_eagain(support: CgroupSupport, procs: Procs) -> None:
    need(support, "pids")
    fork_loop = (
        "import os, time\n"
        "kids, errors = [], 0\n"
        "for _ in range(60):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except BlockingIOError:\n"
        "        errors += 1\n"
        "        continue\n"
        "    if pid == 0:\n"
        "        time.sleep(2); os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(len(kids), errors, flush=True)\n"
        "for k in kids: os.waitpid(k, 0)\n"
    )
    with SessionCgroup.create("forks", CgroupLimits(pids_max=20), support) as cg:
        p = python_in(cg, procs, fork_loop, stdout=subprocess.PIPE)
        out, _ = p.communicate(timeout=30)
        kids, errors = map(int, out.split())
        assert kids <= 19 and errors >= 40, out
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_kill_takes_the_whole_tree_and_remove_cleans_up(
    support: CgroupSupport, procs: Procs
) -> None:
    need(support, "pids")
    cg = SessionCgroup.create("tree", CgroupLimits(pids_max=50), support)
    script = "read x; sleep 100 & sleep 100 & (sleep 100 &) ; sleep 100 & wait"
    p = start_in(cg, procs, ["/bin/sh", "-c", script])
    deadline = time.monotonic() + 5
    while len(cg.pids()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    inside = cg.pids()
    assert len(inside) >= 5, inside  # sh, three sleeps, and one daemonised (reparented) sleep
    assert cg.kill()
    assert cg.pids() == [] and p.wait(timeout=5) == -9
    assert all(process_gone(pid) for pid in inside)
    cg.remove()
    assert not any(path.exists() for path in cg.paths)


def test_add_refuses_init_and_the_supervisor(support: CgroupSupport) -> None:
    need(support, "pids")
    with SessionCgroup.create("guard", CgroupLimits(), support) as cg:
        for pid in (1, os.getpid()):
            with pytest.raises(ValueError):
                cg.add(pid)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_cpu_quota_throttles_a_busy_loop(support: CgroupSupport, procs: Procs) -> None:
    need(support, "cpu")
    with SessionCgroup.create("cpu", CgroupLimits(cpu_quota=0.2), support) as cg:
        p = python_in(cg, procs, "while True: pass")
        time.sleep(0.3)
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(1.0)
        share = (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
    print(f"busy loop under cpu_quota=0.2 got {share:.0%} of one CPU")
    assert 0.05 <= share <= 0.30


def unified_dir() -> Path | None:
    """Our directory in a cgroup2 hierarchy, if one is mounted (hybrid hosts mount it bare)."""
    own = [ln[3:] for ln in Path("/proc/self/cgroup").read_text().splitlines() if ln[:3] == "0::"]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt, _, fs = line.partition(" - ")
        if fs.startswith("cgroup2 ") and own and mnt.split()[3] == "/":
            return Path(mnt.split()[4]) / own[0].lstrip("/")
    return None


@pytest.mark.parametrize("via", ["cgroup.kill", "freeze+SIGKILL"])
def test_v2_kill_on_the_real_kernel(
    procs: Procs, via: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cgroup.kill, .freeze and .procs need no controller: any writable cgroup2 mount will do."""
    own = unified_dir()
    if own is None or not os.access(own, os.W_OK):
        pytest.skip("no writable cgroup2 directory (no cgroup2 mount, or not root/delegated)")
    group = own / f"codeinterp-test-{os.getpid()}"
    group.mkdir()
    if not (group / "cgroup.kill").exists():
        group.rmdir()
        pytest.skip("this kernel has no cgroup.kill (< 5.14)")
    cg = SessionCgroup("v2", {"pids": group}, None)
    if via != "cgroup.kill":  # take the path for kernels without cgroup.kill
        real = Path.exists
        monkeypatch.setattr(Path, "exists", lambda p: p.name != "cgroup.kill" and real(p))
    try:
        p = start_in(cg, procs, ["/bin/sh", "-c", "read x; sleep 100 & (sleep 100 &); wait"])
        deadline = time.monotonic() + 5
        while len(cg.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        inside = cg.pids()
        assert len(inside) >= 3 and cg.kill() and cg.pids() == []
        assert p.wait(timeout=5) == -9 and all(process_gone(pid) for pid in inside)
        assert (group / "cgroup.freeze").read_text().strip() == "0"  # thawed again
    finally:
        monkeypatch.undo()
        cg.remove()
    assert not group.exists()
