"""Read back, from the host side, what isolation a session process really has.

Nothing here trusts the session: every fact comes from the host's view of /proc/PID. The
session executor calls `check()` after each session starts and refuses (fails closed) a
session running as root or missing a layer it must have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

NAMESPACES = ("pid", "mnt", "net", "ipc", "uts", "user")


@dataclass(frozen=True)
class Isolation:
    uid: int
    gid: int
    no_new_privs: bool
    seccomp_mode: int  # 0 off, 1 strict, 2 filter
    cap_effective: int
    cap_bounding: int
    namespaces: dict[str, bool]  # namespace -> differs from the host's
    uid_map: str

    def problems(self, *, network: bool) -> list[str]:
        """What is missing, in words; empty when the session is locked in as designed."""
        found = []
        if self.uid == 0:
            found.append("the session runs as host root (Uid: 0)")
        if not self.no_new_privs:
            found.append("no_new_privs is not set")
        if self.seccomp_mode != 2:
            found.append("no seccomp filter is installed")
        if self.cap_effective or self.cap_bounding:
            found.append("the session still holds capabilities")
        for ns in ("pid", "mnt", "ipc", "uts") + (() if network else ("net",)):
            if not self.namespaces.get(ns):
                found.append(f"the session shares the host's {ns} namespace")
        return found


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def read_back(pid: int) -> Isolation:
    status = _status(pid)
    namespaces = {}
    for ns in NAMESPACES:
        try:
            namespaces[ns] = (
                os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino
            )
        except OSError:
            namespaces[ns] = False
    try:
        with open(f"/proc/{pid}/uid_map") as f:
            uid_map = " ".join(f.read().split())
    except OSError:
        uid_map = "?"
    return Isolation(
        uid=int(status["Uid"].split()[1]),  # the effective uid, as the host sees it
        gid=int(status["Gid"].split()[1]),
        no_new_privs=status.get("NoNewPrivs") == "1",
        seccomp_mode=int(status.get("Seccomp", "0")),
        cap_effective=int(status.get("CapEff", "0"), 16),
        cap_bounding=int(status.get("CapBnd", "0"), 16),
        namespaces=namespaces,
        uid_map=uid_map,
    )
