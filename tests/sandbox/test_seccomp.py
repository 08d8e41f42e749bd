"""The seccomp filter, exercised in child interpreters.

The filter is irreversible and inherited, so it is never installed in the pytest process: each
test runs `sys.executable -c <prelude + body>` in a new session (no controlling terminal), where
the prelude installs the filter, and the body asserts. A failing assert fails the child.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codeinterp.sandbox import seccomp

pytestmark = pytest.mark.skipif(not seccomp.supported(), reason="no seccomp filters here")

PRELUDE = """\
import ctypes, errno, os, socket, sys
from codeinterp.sandbox import seccomp
POLICY = seccomp.FilterPolicy(allow_network={allow_network})
if {install}:
    seccomp.install(POLICY)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = seccomp.SYSCALLS[os.uname().machine]

def err(ret):
    '''errno of a libc call that returned `ret`; 0 if it succeeded.'''
    return ctypes.get_errno() if ret == -1 else 0

def sys_err(name, *args):
    '''errno of the raw syscall `name`(args); 0 if it succeeded.'''
    return err(libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args)))
"""


def run_child(
    body: str, *, allow_network: bool = False, install: bool = True, as_uid: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + `body` in a fresh interpreter, optionally as `as_uid` (via setpriv)."""
    code = PRELUDE.format(allow_network=allow_network, install=install) + textwrap.dedent(body)
    prefix = []
    if as_uid is not None:
        prefix = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups"]
    return subprocess.run(
        [*prefix, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        cwd="/",
    )


def sandboxed(body: str, **kwargs: bool) -> str:
    """Run `body` under the filter; assert the child succeeded; return its stdout."""
    done = run_child(body, **kwargs)
    assert done.returncode == 0, f"child failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


def test_inet_sockets_get_eperm_while_unix_sockets_work() -> None:
    sandboxed("""
        for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET):
            assert err(libc.socket(family, socket.SOCK_DGRAM, 0)) == errno.EPERM, family
            fds = (ctypes.c_int * 2)()
            assert err(libc.socketpair(family, socket.SOCK_DGRAM, 0, fds)) == errno.EPERM
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1)
            raise AssertionError("AF_INET connect got through")
        except PermissionError:
            pass
        # Only the low word is compared, as the kernel (int family) reads only the low word too.
        assert sys_err("socket", (1 << 32) | socket.AF_INET, socket.SOCK_STREAM, 0) == errno.EPERM

        a, b = socket.socketpair()
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
        path = f"/tmp/seccomp-test-{os.getpid()}.sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
                conn, _ = server.accept()
                client.sendall(b"pong")
                assert conn.recv(4) == b"pong"
                conn.close()
        os.unlink(path)
    """)


def test_multiprocessing_pool_works_with_fork_and_spawn() -> None:
    out = sandboxed("""
        import multiprocessing
        for method in ("fork", "spawn"):
            with multiprocessing.get_context(method).Pool(2) as pool:
                print(method, pool.map(abs, [-1, -2, -3]))
    """)
    assert out == "fork [1, 2, 3]\nspawn [1, 2, 3]\n"


def test_ptrace_traceme_gets_eperm() -> None:
    sandboxed("""
        PTRACE_TRACEME = 0
        args = (ctypes.c_long(PTRACE_TRACEME), ctypes.c_long(0), None, None)
        assert err(libc.ptrace(*args)) == errno.EPERM
        assert sys_err("process_vm_readv", os.getppid(), 0, 0, 0, 0, 0) == errno.EPERM
    """)


UNSHARE_NEWNS = """
    CLONE_NEWNS = 0x20000
    print(err(libc.unshare(CLONE_NEWNS)))
"""


def test_unshare_mount_namespace_gets_eperm() -> None:
    assert sandboxed(UNSHARE_NEWNS) == "1\n"  # EPERM
    if os.geteuid() == 0:  # the control: as root, without the filter, it succeeds
        assert sandboxed(UNSHARE_NEWNS, install=False) == "0\n"


def test_mount_gets_eperm(tmp_path: Path) -> None:
    sandboxed(f"""
        ret = libc.mount(b"none", b"{tmp_path}", b"tmpfs", ctypes.c_ulong(0), None)
        if ret == 0:
            libc.umount2(b"{tmp_path}", 0)
        assert err(ret) == errno.EPERM
        assert err(libc.umount2(b"/proc", 0)) == errno.EPERM
        assert err(libc.chroot(b"/tmp")) == errno.EPERM
    """)


def test_clone_with_any_namespace_flag_gets_eperm() -> None:
    sandboxed("""
        import signal
        for flag in (0x80, 0x20000, 0x02000000, 0x04000000, 0x08000000,
                     0x10000000, 0x20000000, 0x40000000):
            ret = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long(flag | signal.SIGCHLD),
                               *(ctypes.c_long(0) for _ in range(4)))
            if ret == 0:  # a child escaped the filter: leave at once
                os._exit(0)
            if ret > 0:
                os.waitpid(ret, 0)
            assert err(ret) == errno.EPERM, hex(flag)
    """)


def test_clone3_gets_enosys_so_glibc_falls_back_to_clone() -> None:
    sandboxed("""
        assert sys_err("clone3", 0, 0) == errno.ENOSYS
    """)


def test_fork_threads_and_subprocesses_still_work() -> None:
    out = sandboxed("""
        import subprocess, threading
        from concurrent.futures import ThreadPoolExecutor
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(abs, range(-8, 0))) == list(range(8, 0, -1))
        assert subprocess.run(["true"]).returncode == 0
        pid = os.posix_spawn("/bin/true", ["true"], os.environ)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        # The filter is inherited by an exec'd child.
        child = subprocess.run(
            [sys.executable, "-c", "print(open('/proc/self/status').read())"],
            capture_output=True, text=True, check=True)
        print([line for line in child.stdout.splitlines() if line.startswith("Seccomp:")][0])
    """)
    assert out == "Seccomp:\t2\n"


def test_proc_status_shows_filter_mode_and_no_new_privs() -> None:
    status = sandboxed("print(open('/proc/self/status').read())")
    assert "\nSeccomp:\t2\n" in status
    assert "\nNoNewPrivs:\t1\n" in status


def test_threads_started_before_install_get_the_filter_too() -> None:
    out = sandboxed(
        """
        import threading
        ready, installed, results = threading.Event(), threading.Event(), []
        def worker():
            ready.set()
            installed.wait()
            results.append(open("/proc/thread-self/status").read())
            results.append(err(libc.unshare(0x20000)))
        thread = threading.Thread(target=worker)
        thread.start()
        ready.wait()
        seccomp.install(POLICY)
        installed.set()
        thread.join()
        status, unshare_errno = results
        assert "\\nSeccomp:\\t2\\n" in status and "\\nNoNewPrivs:\\t1\\n" in status, status
        assert unshare_errno == errno.EPERM
        print("ok")
    """,
        install=False,
    )
    assert out == "ok\n"


def test_allow_network_permits_inet_sockets_but_keeps_other_denials() -> None:
    sandboxed(
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
        assert err(libc.unshare(0x20000)) == errno.EPERM
    """,
        allow_network=True,
    )


def test_numpy_import_and_matmul_work_after_install() -> None:
    out = sandboxed("""
        import numpy as np
        a = np.arange(400 * 400, dtype=np.float64).reshape(400, 400) % 7
        b = np.eye(400) * 2
        assert np.array_equal(a @ b, a * 2)
        print(int((a @ a.T).trace()))
    """)
    a = [[(i * 400 + j) % 7 for j in range(400)] for i in range(400)]
    assert out == f"{sum(x * x for row in a for x in row)}\n"


def test_tiocsti_gets_eperm_while_other_tty_ioctls_work() -> None:
    sandboxed("""
        import fcntl, struct, termios
        master, slave = os.openpty()
        assert err(libc.ioctl(slave, ctypes.c_ulong(0x5412), ctypes.c_char_p(b"x"))) == errno.EPERM
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, bytes(8)))
        assert os.isatty(slave)
    """)


def test_personality_may_be_queried_but_not_changed() -> None:
    sandboxed("""
        ADDR_NO_RANDOMIZE, PER_LINUX32 = 0x0040000, 0x0008
        assert libc.personality(ctypes.c_ulong(0xFFFFFFFF)) == 0
        assert libc.personality(ctypes.c_ulong(0)) == 0
        for persona in (ADDR_NO_RANDOMIZE, PER_LINUX32):
            assert err(libc.personality(ctypes.c_ulong(persona))) == errno.EPERM
    """)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x32 exists on x86_64 only")
def test_x32_abi_syscalls_get_enosys() -> None:
    sandboxed("""
        getpid_x32 = 0x40000000 | 39
        assert err(libc.syscall(ctypes.c_long(getpid_x32))) == errno.ENOSYS
    """)


I386_GETPID = """
    import mmap
    # mov eax, 20 (i386 getpid); int 0x80; ret
    code = bytes.fromhex("b814000000cd80c3")
    mem = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    mem.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)() == os.getpid(), flush=True)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="i386 emulation is x86_64 only")
def test_syscall_through_the_i386_abi_kills_the_process() -> None:
    control = run_child(I386_GETPID, install=False)
    if control.stdout != "True\n":
        pytest.skip("no i386 syscall emulation on this kernel")
    done = run_child(I386_GETPID)
    assert done.returncode == -31, done  # SIGSYS from SECCOMP_RET_KILL_PROCESS
    assert done.stdout == ""


def test_every_denied_syscall_gets_eperm() -> None:
    out = sandboxed("""
        wrong = {}
        for name in seccomp.DENIED_SYSCALLS:
            if name in NR:  # zero arguments: harmless (EFAULT, EINVAL, ...) if ever let through
                e = sys_err(name, 0, 0, 0, 0, 0, 0)
                if e != errno.EPERM:
                    wrong[name] = e
        print(wrong)
    """)
    assert out == "{}\n"


def test_install_fails_closed_with_oserror_when_unsupported() -> None:
    out = sandboxed(
        """
        seccomp.supported = lambda: False
        try:
            seccomp.install()
        except OSError as e:
            print(e.errno == errno.ENOSYS, "not supported" in str(e))
        print(open("/proc/self/status").read().count("Seccomp:\\t0"))
    """,
        install=False,
    )
    assert out == "True True\n1\n"


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to drop uid"
)
def test_install_works_as_an_unprivileged_user() -> None:
    body = """
        assert os.getuid() != 0
        assert err(libc.unshare(0x10000000)) == errno.EPERM  # CLONE_NEWUSER, allowed unfiltered
        assert err(libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)) == errno.EPERM
        print(open("/proc/self/status").read().count("NoNewPrivs:\\t1"))
    """
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "import codeinterp"], capture_output=True, text=True, cwd="/")  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"uid 65534 cannot run this interpreter: {probe.stderr[-200:]}")
    done = run_child(body, as_uid=65534)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1\n"


HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


@pytest.mark.parametrize("machine", sorted(seccomp.SYSCALLS))
def test_syscall_numbers_match_kernel_headers(machine: str) -> None:
    header = HEADERS[machine]
    if not header.exists():
        pytest.skip(f"{header} not installed (Debian: linux-libc-dev)")
    defined = {
        m[1]: int(m[2])
        for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text())
    }
    table = seccomp.SYSCALLS[machine]
    # Newer than the installed headers: the unified numbers are the same everywhere.
    assert {name: defined.get(name, nr) for name, nr in table.items()} == table


@pytest.mark.parametrize("machine", sorted(seccomp.SYSCALLS))
def test_program_checks_arch_first_and_fits_bpf_limits(machine: str) -> None:
    prog = seccomp.build_filter(machine=machine)
    open_prog = seccomp.build_filter(seccomp.FilterPolicy(allow_network=True), machine=machine)
    assert prog[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch
    assert prog[-1] == (0x06, 0, 0, 0x7FFF0000)  # default: allow
    assert len(open_prog) < len(prog) < 4096
    for i, (code, jt, jf, _) in enumerate(prog):
        if code & 0x07 == 0x05:  # BPF_JMP: both targets inside the program
            assert i + 1 + max(jt, jf) < len(prog)
