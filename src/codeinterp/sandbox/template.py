"""The template process: imports the heavy libraries once, then forks sessions on request.

Started by the host (executors/sandbox.py) as `python -s -P -m codeinterp.sandbox.template
--control-fd N` with a scrubbed environment. It talks to the host over a SOCK_SEQPACKET socket:

    host -> template  {"op": "config", "policy": {...}, "preload": [...]}   (first message)
    template -> host  {"type": "ready", "preloaded": [...], "failed": {...}, ...}
    host -> template  {"op": "spawn", "sid": S}  + one fd: the session's end of a socketpair
    template -> host  {"type": "spawned", "sid": S, "pid": P}
    template -> host  {"type": "exit", "pid": P, "status": waitstatus}     (whenever one ends)

Each session is forked as PID 1 of a new pid namespace (so killing it kills all it started)
and locks itself in (child.py). `gc.freeze()` before forking keeps the imported libraries'
memory shared between sessions instead of copied on the first garbage collection.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
from dataclasses import fields
from typing import Any

from codeinterp.sandbox import linux
from codeinterp.sandbox.child import ChildSetup, become_session
from codeinterp.sandbox.policy import SandboxPolicy

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc")


def system_layout() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Host paths a session needs read-only (system, Python, our package), and symlinks."""
    paths: list[str] = []
    links: list[tuple[str, str]] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.exists(path):
            paths.append(path)
    import codeinterp

    candidates = [
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.dirname(os.path.abspath(codeinterp.__file__))),
        *sys.path,
    ]  # fmt: skip
    for candidate in candidates:
        real = os.path.realpath(candidate) if candidate else ""
        if not real or not os.path.exists(real):
            continue
        if any(real == p or real.startswith(p + "/") for p in paths):
            continue
        paths = [p for p in paths if not p.startswith(real + "/")]  # keep the outermost only
        paths.append(real)
    # The virtual environment's own path may be a symlink farm onto the real interpreter.
    for candidate in (sys.prefix, os.path.dirname(sys.executable)):
        if os.path.realpath(candidate) != candidate and not any(
            candidate == p or candidate.startswith(p + "/") for p in paths
        ):
            paths.append(candidate)
    return tuple(sorted(paths)), tuple(links)


def preload(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    loaded: list[str] = []
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # a missing optional library must not stop the template
            failed[name] = f"{type(exc).__name__}: {exc}"
    # What every session runs anyway, imported once here.
    import codeinterp.worker.main  # noqa: F401

    if "matplotlib" in sys.modules:
        import codeinterp.worker.mplbackend  # noqa: F401
    return loaded, failed


def enter_own_user_namespace() -> None:
    """Non-root: become root of a user namespace of our own, mapped to our real uid."""
    linux.enter_user_namespace(0, os.getuid(), os.getgid())


class Template:
    def __init__(self, control: socket.socket, setup: ChildSetup) -> None:
        self.control = control
        self.setup = setup
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
        # Root can step back into its own pid namespace after each fork; a user namespace
        # cannot (setns needs privilege over the host's), so it forks twice instead.
        self.double_fork = setup.in_user_namespace
        self.sessions: set[int] = set()

    def spawn(self, sock: int) -> int:
        if not self.double_fork:
            linux.unshare(linux.CLONE_NEWPID)
            pid = -1
            try:
                pid = os.fork()
                if pid == 0:
                    become_session(sock, self.setup)
            finally:
                if pid != 0:
                    linux.setns(self.own_pid_ns, linux.CLONE_NEWPID)
            return pid
        report_r, report_w = os.pipe()
        middle = os.fork()
        if middle == 0:  # the middle process: make the pid namespace, fork its PID 1, leave
            os.close(report_r)
            try:
                linux.unshare(linux.CLONE_NEWPID)
                pid = os.fork()
                if pid == 0:
                    os.close(report_w)
                    become_session(sock, self.setup, die_with_parent=False)
                os.write(report_w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(report_w)
        data = b""
        while chunk := os.read(report_r, 32):
            data += chunk
        os.close(report_r)
        os.waitpid(middle, 0)
        if not data:
            raise OSError("the session process could not be forked")
        return int(data)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.sessions.discard(pid)
            self.send({"type": "exit", "pid": pid, "status": status})

    def kill_sessions(self) -> None:
        for pid in self.sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def send(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())

    def serve(self, wakeup: int) -> None:
        while True:
            ready, _, _ = select.select([self.control.fileno(), wakeup], [], [])
            if wakeup in ready:
                try:
                    os.read(wakeup, 4096)
                except BlockingIOError:
                    pass
                self.reap()
            if self.control.fileno() in ready:
                data, fds, _, _ = socket.recv_fds(self.control, 1 << 16, 1)
                if not data:
                    self.kill_sessions()  # the host is gone: so are its sessions
                    return
                message = json.loads(data)
                if message.get("op") == "spawn" and fds:
                    try:
                        pid = self.spawn(fds[0])
                        self.sessions.add(pid)
                        self.send({"type": "spawned", "sid": message["sid"], "pid": pid})
                    except OSError as exc:
                        self.send(
                            {"type": "spawn_failed", "sid": message["sid"], "error": str(exc)}
                        )
                    finally:
                        os.close(fds[0])
                self.reap()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="codeinterp-template")
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    config = json.loads(control.recv(1 << 20))
    known = {f.name for f in fields(SandboxPolicy)}
    policy = SandboxPolicy(**{k: v for k, v in config["policy"].items() if k in known})
    in_user_namespace = os.getuid() != 0
    if in_user_namespace:
        enter_own_user_namespace()
    loaded, failed = preload(list(config.get("preload", [])))
    read_only, links = system_layout()
    root_dir = tempfile.mkdtemp(prefix="codeinterp-root-")
    setup = ChildSetup(root_dir, read_only, links, policy, in_user_namespace)
    template = Template(control, setup)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    if in_user_namespace:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)  # double-forked sessions come back to us
    gc.collect()
    gc.freeze()
    template.send(
        {
            "type": "ready",
            "pid": os.getpid(),
            "preloaded": loaded,
            "failed": failed,
            "user_namespace": in_user_namespace,
            "read_only_paths": list(read_only),
        }
    )
    try:
        template.serve(wakeup_r)
    finally:
        os.rmdir(root_dir)


if __name__ == "__main__":
    main()
