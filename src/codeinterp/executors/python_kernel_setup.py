"""The set-up run silently in each new Python kernel, local (`jupyter`) or remote (`gateway`).

Plots come back as image/png through matplotlib's inline backend, and stdout and stderr keep
their order and their fd-level output (see `PY_SETUP`).
"""

from __future__ import annotations

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

# Run silently in each new Python kernel. ipykernel buffers stdout and stderr apart (their order
# was lost): flush the other stream before writing to one; `write` is a property as IPython
# re-patches it per cell. Add `.buffer`. Output written to fd 1/2 as a cell ends came after its
# reply: after each cell, send a mark down each fd's pipe and wait for ipykernel's reader.
PY_SETUP = """
def _codeinterp_setup():
    import fcntl, io, os, sys, termios, threading, time
    if (OutStream := type(sys.stdout)).__name__ != "OutStream": return  # not ipykernel
    class Bytes(io.RawIOBase):
        def __init__(self, text): self.text = text
        def writable(self): return True
        def write(self, b): self.text.write(bytes(b).decode(errors="replace")); return len(b)
    last, mark = [], "\\x00codeinterp-sync\\x00"
    class OrderedOutStream(OutStream):
        def _ordered_write(self, text):
            marked, text = mark in text, text.replace(mark, "")
            if text:
                if last and last[0] is not self: last[0].flush()
                last[:] = [self]
                OutStream.write(self, text)
            if marked: self.synced.set()
            return len(text)
        def _set_write(self, fn):
            plain = getattr(fn, "__func__", None) is OutStream.write
            self.__dict__["_patched_write"] = None if plain else fn
        write = property(lambda s: s.__dict__.get("_patched_write") or s._ordered_write, _set_write)
    streams = [s for s in (sys.stdout, sys.stderr) if type(s) is OutStream]
    watched = [s for s in streams if getattr(s, "watch_fd_thread", None) is not None]
    for stream in streams:
        stream.__dict__.pop("write", None)
        stream.__class__, stream.buffer = OrderedOutStream, Bytes(stream)
        stream.synced = threading.Event()
    for stream in watched:  # stop echoing fd output to the kernel's log file
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream._original_stdstream_copy)
    def piped(s):  # fd 1/2 still leads to the pipe and its reader is alive
        try: return os.fstat(s._original_stdstream_fd).st_ino == os.fstat(s._fid).st_ino
        except OSError: return False
    def sync_fd_output(*args):  # drain each pipe first, so its mark is read in one piece
        live = [s for s in watched if s.watch_fd_thread.is_alive() and piped(s)]
        for stream in live:
            for _ in range(100):
                if fcntl.ioctl(stream._fid, termios.FIONREAD, bytes(4)) == bytes(4): break
                time.sleep(0.001)
            stream.synced.clear()
            os.write(stream._original_stdstream_fd, mark.encode())
        for stream in live:
            stream.synced.wait(0.5)
    get_ipython().events.register("post_execute", sync_fd_output)
_codeinterp_setup()
del _codeinterp_setup
"""
