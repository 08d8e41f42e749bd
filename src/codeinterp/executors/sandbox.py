"""The `sandbox` executor: sessions forked from a pre-loaded template, locked in by the kernel.

Opening a session takes a warm, already-namespaced process from a pool and hands it a workspace;
the process finishes locking itself in (see sandbox/child.py) and serves cells over a socket with
the same framed protocol as the `repl` worker. The host then reads back from /proc what the
session really got and refuses it if it runs as root or lacks a layer (fail closed).

Limits: a per-session cgroup (memory, pids, cpu) when the machine lets us write one; rlimits
always. A cell that overruns its time is interrupted, then the whole session is killed (PID 1 of
its pid namespace: everything it started dies with it) and replaced on the same workspace.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codeinterp.errors import SessionClosed, SessionStartError
from codeinterp.executors.base import Capabilities, SessionState, Workspace, describe_exit
from codeinterp.executors.repl import ReplExecutor, ReplSession
from codeinterp.executors.worker_process import WorkerChannel
from codeinterp.sandbox import cgroups, linux, verify
from codeinterp.sandbox.policy import DEFAULT_PRELOAD, SandboxPolicy

TEMPLATE_START_TIMEOUT_S = 120.0
SESSION_START_TIMEOUT_S = 30.0
UID_BASE = 200_000  # root hosts: each session gets its own unprivileged uid from here
UID_RANGE = 50_000


class TemplateProcess:
    """The host's handle on the template: asks it for sessions, hears when they end."""

    def __init__(self, policy: SandboxPolicy, preload: tuple[str, ...]) -> None:
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the template
        env = policy.base_environment()
        env["HOME"] = tempfile.gettempdir()  # the template imports on the host side
        env.pop("MPLCONFIGDIR")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-s", "-P", "-m", "codeinterp.sandbox.template",
                 "--control-fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=env,  # scrubbed: no host secret reaches the template, hence no session
                cwd="/",
                start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        self._lock = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._exits: dict[int, int] = {}
        self._sids = itertools.count(1)
        self._send({"op": "config", "policy": asdict(policy), "preload": list(preload)})
        self.info = self._wait_ready()
        self._reader = threading.Thread(
            target=self._read_loop, name="codeinterp-template", daemon=True
        )
        self._reader.start()

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        socket.send_fds(self._control, [json.dumps(message).encode()], fds or [])

    def _wait_ready(self) -> dict[str, Any]:
        self._control.settimeout(TEMPLATE_START_TIMEOUT_S)
        try:
            data = self._control.recv(1 << 20)
        except OSError:
            data = b""
        self._control.settimeout(None)
        if not data:
            self.close()
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            raise SessionStartError(
                "The sandbox template did not start: "
                + (lines[-1] if lines else "no error output")
                + ". `codeinterp doctor` shows which isolation layers this machine allows. "
                "If user namespaces are blocked (Ubuntu 23.10+: `sudo sysctl "
                "kernel.apparmor_restrict_unprivileged_userns=0`), allow them, or choose an "
                "executor without isolation explicitly (`--executor repl`)."
            )
        message: dict[str, Any] = json.loads(data)
        return message

    def _read_loop(self) -> None:
        while True:
            try:
                data = self._control.recv(1 << 16)
            except OSError:
                data = b""
            with self._lock:
                if not data:
                    self._exits.setdefault(-1, 0)  # the template itself is gone
                    self._lock.notify_all()
                    return
                message = json.loads(data)
                if message.get("type") == "exit":
                    self._exits[int(message["pid"])] = int(message["status"])
                else:
                    self._replies[int(message["sid"])] = message
                self._lock.notify_all()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def spawn(self) -> tuple[int, socket.socket]:
        """A new session process (still to be handed its workspace) and our end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sid = next(self._sids)
        try:
            self._send({"op": "spawn", "sid": sid}, [theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise SessionStartError(
                f"The sandbox template is gone ({exc}); open a new executor."
            ) from exc
        finally:
            theirs.close()
        with self._lock:
            self._lock.wait_for(lambda: sid in self._replies or -1 in self._exits, 30.0)
            reply = self._replies.pop(sid, None)
        if reply is None or reply.get("type") != "spawned":
            ours.close()
            detail = reply.get("error") if reply else "no answer"
            raise SessionStartError(f"The sandbox template could not fork a session: {detail}")
        return int(reply["pid"]), ours

    def wait_exit(self, pid: int, timeout_s: float) -> int | None:
        """The wait status of a session process once it has ended (None if not within timeout)."""
        with self._lock:
            self._lock.wait_for(lambda: pid in self._exits or -1 in self._exits, timeout_s)
            return self._exits.pop(pid, None)

    def close(self) -> None:
        try:
            self._control.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._control.close()
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._stderr.close()


class SandboxChannel(WorkerChannel):
    """The conversation with one sandboxed session process (PID 1 of its own namespaces)."""

    def __init__(
        self,
        template: TemplateProcess,
        pid: int,
        sock: socket.socket,
        cgroup: cgroups.SessionCgroup | None,
    ) -> None:
        self._sock = sock
        super().__init__(sock.fileno(), sock.fileno())
        self._template = template
        self._pid = pid
        self.cgroup = cgroup
        self._status: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def alive(self) -> bool:
        return self._status is None and self._sock.fileno() >= 0

    def interrupt(self) -> None:
        if self._status is None:
            try:
                os.kill(self._pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def _reap(self, timeout_s: float) -> int | None:
        if self._status is None:
            self._status = self._template.wait_exit(self._pid, timeout_s)
        return self._status

    def kill(self) -> None:
        if self._status is None:
            try:
                os.kill(self._pid, signal.SIGKILL)  # PID 1 of its namespace: all of it dies
            except ProcessLookupError:
                pass
            self._reap(5.0)
        if self.cgroup is not None:
            self.cgroup.remove()  # kills any straggler first
        self._sock.close()
        self._read_fd = self._write_fd = -1

    def exit_cause(self) -> str:
        status = self._reap(1.0)
        if self.cgroup is not None and self.cgroup.oom_killed():
            return "memory limit: the session used all the memory it may use and was killed"
        return describe_exit(None if status is None else os.waitstatus_to_exitcode(status))

    def close(self, timeout_s: float = 1.0) -> None:
        if self._status is None:
            try:
                self.send({"op": "shutdown"})
            except OSError:
                pass
            self._reap(timeout_s)
        self.kill()


class SharedFolder:
    """Root hosts: the folder our workspaces live in, a shared mount point.

    Warm sessions made their mount namespaces before their workspace existed; a tmpfs the host
    mounts here later still propagates into them (they are slaves of this mount).
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="codeinterp-workspaces-"))
        linux.mount(str(self.path), str(self.path), None, linux.MS_BIND)
        linux.mount(None, str(self.path), None, linux.MS_SHARED)

    def close(self) -> None:
        try:
            linux.umount2(str(self.path), linux.MNT_DETACH)
            self.path.rmdir()
        except OSError:
            pass


class SandboxWorkspace(Workspace):
    """A workspace the session's uid can write; one we create is a size-limited tmpfs (root)."""

    def __init__(
        self, path: Path | None, policy: SandboxPolicy, uid: int | None, folder: SharedFolder | None
    ) -> None:
        if path is None and folder is not None:
            path = Path(tempfile.mkdtemp(prefix="ws-", dir=folder.path))
            super().__init__(path)
            self.owned = True
        else:
            super().__init__(path)
        self.mounted = False
        if uid is None:  # non-root host: the session runs as our own user
            return
        if self.owned:
            options = (
                f"size={policy.workspace_bytes},nr_inodes={policy.workspace_inodes},"
                f"mode=0700,uid={uid},gid={uid}"
            )
            try:
                linux.mount(
                    "tmpfs", str(self.path), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, options
                )
                self.mounted = True
            except OSError:
                pass
        if not self.mounted:
            os.chown(self.path, uid, uid)

    def cleanup(self) -> None:
        if self.mounted:
            try:
                linux.umount2(str(self.path), linux.MNT_DETACH)
            except OSError:
                pass
        super().cleanup()


class SandboxSession(ReplSession):
    """A stateful session in the sandbox; replaced on the same workspace if it dies."""

    def __init__(
        self, executor: SandboxExecutor, workspace: SandboxWorkspace, uid: int | None
    ) -> None:
        self._executor = executor
        self.uid = uid
        self.isolation: verify.Isolation | None = None
        super().__init__(executor.settings, workspace)

    def _new_worker(self) -> WorkerChannel:
        return self._executor.hand_over(self)

    workspace_inside = "/workspace"  # where the session itself sees its workspace

    @property
    def sandbox_notes(self) -> list[str]:
        """What isolation this session lacks on this machine (empty when it has every layer)."""
        return list(self._executor.degraded)

    @property
    def cgroup(self) -> cgroups.SessionCgroup | None:
        """The session's cgroup (None where the machine gives none)."""
        worker = self._worker
        return worker.cgroup if isinstance(worker, SandboxChannel) else None


class SandboxExecutor(ReplExecutor):
    """Sessions forked from a pre-loaded template into namespaces, seccomp and cgroups."""

    name = "sandbox"
    capabilities = Capabilities(stateful=True, can_kill=True, separate_process=True, isolated=True)
    session_class = SandboxSession  # type: ignore[assignment]

    def __init__(
        self,
        *,
        policy: SandboxPolicy | None = None,
        pool_size: int = 2,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.policy = policy or SandboxPolicy()
        self.pool_size = pool_size
        self.folder = SharedFolder() if os.getuid() == 0 else None
        try:
            self.template = TemplateProcess(self.policy, tuple(preload))
        except BaseException:
            if self.folder is not None:
                self.folder.close()
            raise
        self.cgroup_support = cgroups.detect()
        self.degraded = self._degraded_layers()
        self._warm: collections.deque[SandboxChannel] = collections.deque()
        self._pool_lock = threading.Lock()
        self._pool_wanted = threading.Event()
        self._uids = itertools.count(os.getpid() * 7919)
        self._session_names = itertools.count(1)
        if pool_size:
            self._pool_wanted.set()
            self._filler = threading.Thread(
                target=self._fill_loop, name="codeinterp-pool", daemon=True
            )
            self._filler.start()

    def _degraded_layers(self) -> list[str]:
        """Layers this machine does not give us, in words (shown by `chat` and `doctor`)."""
        notes = []
        missing = {"memory", "pids", "cpu"} - set(self.cgroup_support.controllers)
        if missing:
            notes.append(
                f"no cgroup for {', '.join(sorted(missing))} (per-process rlimits instead): "
                f"{self.cgroup_support.reason or 'not available'}"
            )
        if self.folder is None:
            notes.append("workspace size and inode quota need root (per-file size limit only)")
        return notes

    # -- the pool -------------------------------------------------------------------------
    def _spawn(self) -> SandboxChannel:
        """A new session process, in its cgroup, still waiting for its workspace.

        Joining the cgroup happens here, off the open() path: on cgroup v1 moving a process
        costs ~10 ms (the kernel waits for an RCU grace period).
        """
        pid, sock = self.template.spawn()
        channel = SandboxChannel(self.template, pid, sock, None)
        try:
            channel.cgroup = self._cgroup_for(pid)
        except BaseException:
            channel.kill()
            raise
        return channel

    def _fill_loop(self) -> None:
        while self._pool_wanted.wait() and not self._closed:
            self._pool_wanted.clear()
            while len(self._warm) < self.pool_size and not self._closed:
                try:
                    channel = self._spawn()
                except Exception:
                    break  # open() will spawn directly and report the error
                with self._pool_lock:
                    if self._closed:
                        channel.kill()
                        return
                    self._warm.append(channel)

    def _take(self) -> SandboxChannel:
        with self._pool_lock:
            channel = self._warm.popleft() if self._warm else None
        self._pool_wanted.set()
        return channel if channel is not None else self._spawn()

    # -- sessions -------------------------------------------------------------------------
    def open(self, *, workspace: Path | None = None) -> SandboxSession:
        if self._closed:
            raise SessionClosed("executor", "open a session")
        uid = self._uid_for(workspace) if os.getuid() == 0 else None
        session = SandboxSession(
            self, SandboxWorkspace(workspace, self.policy, uid, self.folder), uid
        )
        self._sessions = [s for s in self._sessions if s.state is not SessionState.CLOSED]
        self._sessions.append(session)
        return session

    def _uid_for(self, workspace: Path | None) -> int:
        """A session uid of its own; but a workspace a session used before keeps its uid, so a
        replacement session (after a crash or a service restart) can read the files there."""
        if workspace is not None and Path(workspace).is_dir():
            owner = Path(workspace).stat().st_uid
            if UID_BASE <= owner < UID_BASE + UID_RANGE:
                return owner
        return UID_BASE + next(self._uids) % UID_RANGE

    def _cgroup_for(self, pid: int) -> cgroups.SessionCgroup | None:
        if not self.cgroup_support.available:
            return None
        limits = cgroups.CgroupLimits(
            memory_bytes=self.policy.memory_bytes
            if "memory" in self.cgroup_support.controllers
            else None,
            pids_max=self.policy.pids_max if "pids" in self.cgroup_support.controllers else None,
            cpu_quota=self.policy.cpu_quota if "cpu" in self.cgroup_support.controllers else None,
        )
        group = cgroups.SessionCgroup.create(
            f"s{next(self._session_names)}", limits, self.cgroup_support
        )
        group.add(pid)
        return group

    def hand_over(self, session: SandboxSession) -> SandboxChannel:
        """Give a warm process the session's workspace and wait until it serves cells."""
        channel = self._take()
        pid = channel.pid
        try:
            self._expect(channel, "warm", "set up")
            uid = session.uid if session.uid is not None else os.getuid()
            workspace = str(session.workspace)
            controllers = channel.cgroup.groups if channel.cgroup is not None else {}
            channel.send(
                {
                    "op": "bind",
                    "workspace": workspace,
                    "uid": uid,
                    "gid": uid,
                    # Without a cgroup, rlimits are the fallback (weaker: per process).
                    "rlimit_data": None if "memory" in controllers else self.policy.memory_bytes,
                    "rlimit_nproc": None if "pids" in controllers else self.policy.pids_max,
                }
            )
            self._expect(channel, "ready", "start")
            isolation = verify.read_back(pid)
            problems = isolation.problems(network=self.policy.network)
            if problems and not self.policy.allow_unsandboxed:
                raise SessionStartError(
                    "Refusing an unsafe session: "
                    + "; ".join(problems)
                    + ". Run `codeinterp doctor` for details."
                )
            session.isolation = isolation
            return channel
        except BaseException:
            channel.kill()
            raise

    @staticmethod
    def _expect(channel: SandboxChannel, kind: str, stage: str) -> None:
        frame = channel.wait_for(kind, "setup_failed", timeout_s=SESSION_START_TIMEOUT_S)
        if frame is not None and frame["type"] == kind:
            return
        reason = frame.get("error") if frame else f"the process ended ({channel.exit_cause()})"
        raise SessionStartError(f"A sandbox session failed to {stage}: {reason}")

    def close(self) -> None:
        super().close()
        with self._pool_lock:
            warm, self._warm = list(self._warm), collections.deque()
        self._pool_wanted.set()  # let the filler see that we are closed
        for channel in warm:
            channel.kill()
        self.template.close()
        if self.folder is not None:
            self.folder.close()
