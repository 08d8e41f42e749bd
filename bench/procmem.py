"""Memory of a process tree, read from /proc (Linux only).

PSS (proportional set size) is the fair measure for many sessions side by side: every page is
charged to the processes that map it, divided by how many map it. Pages shared copy-on-write
with a template, or shared libraries mapped by all sessions, therefore count once in total
rather than once per session, which RSS would do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Memory:
    """Memory of one process or the sum over a tree, in bytes (from smaps_rollup)."""

    pss: int = 0
    rss: int = 0
    uss: int = 0  # Private_Clean + Private_Dirty: what would be freed if the process ended

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.pss + other.pss, self.rss + other.rss, self.uss + other.uss)


def parent_of(pid: int) -> int | None:
    """The parent pid from /proc/PID/stat, or None if the process is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ")"; the fields after the last ")" don't.
    return int(stat.rsplit(")", 1)[1].split()[1])


def children_map() -> dict[int, list[int]]:
    """Every visible process's children, from the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """`root` followed by all its descendants (children, grandchildren, ...).

    `children` (from `children_map`) can be passed in when many trees are read at one moment:
    building it scans all of /proc, which is costly when repeated for hundreds of sessions.
    """
    if children is None:
        children = children_map()
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_descendant(pid: int, ancestor: int) -> bool:
    """True if `ancestor` is on `pid`'s chain of parents."""
    current: int | None = pid
    while current is not None and current > 1:
        current = parent_of(current)
        if current == ancestor:
            return True
    return False


def namespace_pid(pid: int) -> tuple[str, int] | None:
    """(pid namespace link, pid inside that namespace) of a host pid, or None if unreadable.

    A session inside a pid namespace (a sandbox) sees itself as e.g. pid 1; the last field of
    NSpid in /proc/PID/status is that inner pid, and /proc/PID/ns/pid names the namespace.
    """
    try:
        link = os.readlink(PROC / str(pid) / "ns" / "pid")
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return link, int(line.split()[-1])
    return link, pid


def host_pid(reported_pid: int, namespace: str | None, ancestor: int) -> int | None:
    """The host pid of a process that reported `reported_pid` (and its pid namespace) itself.

    Only descendants of `ancestor` (this benchmark's process) are considered, so a session
    that lives in its own pid namespace is still found, and an unrelated process never is.
    """
    if namespace is None or namespace == _own_namespace():
        return reported_pid if is_descendant(reported_pid, ancestor) else None
    for pid in process_tree(ancestor)[1:]:
        if namespace_pid(pid) == (namespace, reported_pid):
            return pid
    return None


def _own_namespace() -> str | None:
    try:
        return os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        return None


def process_memory(pid: int) -> Memory:
    """One process's memory from /proc/PID/smaps_rollup (zero if it ended meanwhile)."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except FileNotFoundError:
        return Memory()
    fields: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name] = int(parts[0]) * 1024
    return Memory(
        pss=fields.get("Pss", 0),
        rss=fields.get("Rss", 0),
        uss=fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    )


def tree_memory(
    root: int, children: dict[int, list[int]] | None = None
) -> tuple[Memory, list[int]]:
    """Summed memory of `root` and its descendants, with the pids that were counted."""
    pids = process_tree(root, children)
    total = Memory()
    for pid in pids:
        total = total + process_memory(pid)
    return total, pids
