"""What the running service owns: executors, the model, the store, sessions, conversations.

One `Runtime` per app, made at start-up (lifespan) and closed at shutdown. Everything in it
that blocks is called from worker threads through `run()`, bounded by one capacity limiter
sized for many concurrent cells; long work (a cell streamed over SSE, a conversation turn) is
started with `spawn()` so it outlives the request that started it only as long as it must.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from codeinterp.errors import CodeinterpError, RemoteWorkspace
from codeinterp.executors import Executor, Session, available_executors, get_executor
from codeinterp.models.base import Delta, Message, Model, ToolSpec
from codeinterp.server.conversations import Conversations
from codeinterp.server.sessions import SessionEntry, SessionRegistry
from codeinterp.server.settings import ServerSettings
from codeinterp.store import Store

T = TypeVar("T")
log = logging.getLogger("codeinterp.server")
SHUTDOWN_GRACE_S = 10.0


class ModelUnavailable(CodeinterpError):
    """The service's model could not be loaded (503); the message says why and what to do."""


class LockedModel:
    """The shared model with one generation at a time.

    A local model (llama.cpp, transformers) holds one context and KV cache and is not safe to
    drive from two threads; conversations take turns generating, while their cells still run
    concurrently. Models that declare `thread_safe = True` are used as they are.
    """

    def __init__(self, model: Model) -> None:
        self._model = model
        self._lock = threading.Lock()
        self.name = model.name
        self.supports_tools = model.supports_tools
        self.supports_images = model.supports_images
        self.supports_grammar = model.supports_grammar
        self.supports_prefill = getattr(model, "supports_prefill", False)

    def stream(
        self,
        messages: list[Message],
        *,
        stop: list[str] | None = None,
        tools: list[ToolSpec] | None = None,
        grammar: str | None = None,
        **options: Any,
    ) -> Iterator[Delta]:
        with self._lock:
            yield from self._model.stream(
                messages, stop=stop, tools=tools, grammar=grammar, **options
            )

    def close(self) -> None:
        self._model.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)  # anything else a backend offers, as it is


class Runtime:
    """The service's resources and the one way to call them without blocking the loop."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.limiter = anyio.CapacityLimiter(settings.max_threads)
        self.sessions = SessionRegistry(self.open_session)
        self.conversations = Conversations(self)
        self.sessions.on_reopen = self.conversations.reopened
        self.store: Store | None = None
        self.executor_names: list[str] = []
        self._executors: dict[str, Executor] = {}
        self._executors_lock = threading.Lock()
        self._model: Model | None = None
        self._model_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- threads ------------------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call blocking `fn` in a worker thread; the event loop goes on meanwhile."""
        call = functools.partial(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self.limiter)

    def spawn(self, fn: Callable[[], None]) -> None:
        """Start blocking `fn` in a worker thread, not tied to the calling request."""
        task = asyncio.ensure_future(anyio.to_thread.run_sync(fn, limiter=self.limiter))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    # -- lifecycle (blocking: called through run()) -------------------------------------
    def start(self) -> None:
        """Open the store and the default executor; make conversations' sessions reachable."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.settings.db_path)
        self.executor_names = sorted(available_executors())  # entry points: read once
        self.executor(self.settings.executor)
        self.conversations.load()

    def stop_work(self) -> None:
        """Interrupt every turn and close every session (their threads then end)."""
        self.conversations.interrupt_all()
        self.sessions.close_all()

    async def wait_for_work(self) -> None:
        """Wait (a bounded time) for the worker threads still running to finish."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_GRACE_S)

    def close(self) -> None:
        with self._executors_lock:
            executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            try:
                executor.close()
            except Exception:
                log.exception("closing executor %s failed", executor.name)
        with self._model_lock:
            if self._model is not None:
                self._model.close()
                self._model = None
        if self.store is not None:
            self.store.close()

    # -- resources (blocking) -----------------------------------------------------------
    def db(self) -> Store:
        if self.store is None:
            raise RuntimeError("The service has not started: run the app's lifespan first.")
        return self.store

    def executor(self, name: str) -> Executor:
        """The executor named `name`, created on first use and kept until shutdown."""
        with self._executors_lock:
            executor = self._executors.get(name)
            if executor is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # inprocess warns; the caller chose it
                    executor = get_executor(name, **self._executor_options(name))
                self._executors[name] = executor
            return executor

    def _executor_options(self, name: str) -> dict[str, Any]:
        options = dict(self.settings.executor_options.get(name, {}))
        if self.settings.cell_timeout_s is not None:
            options.setdefault("timeout_s", self.settings.cell_timeout_s)
        return options

    def open_session(self, executor: str, workspace: Path | None) -> Session:
        return self.executor(executor).open(workspace=workspace)

    def local_workspace(self, entry: SessionEntry) -> Path:
        """The session's workspace as a directory of this machine, for the file routes.

        Refused (409) for an executor that keeps its workspaces on another host (`gateway`):
        there the path names a directory of the remote server, and the same path here is
        some other directory, or none.
        """
        if not self.executor(entry.executor).capabilities.local_workspace:
            how = (
                f"POST /api/sessions/{entry.id}/execute with code such as "
                "print(open('data.csv').read())"
            )
            raise RemoteWorkspace(entry.executor, how)
        return entry.workspace

    def model(self) -> Model:
        """The shared model, loaded on first use (a local model can take seconds)."""
        with self._model_lock:
            if self._model is None:
                try:
                    if self.settings.model_factory is not None:
                        model = self.settings.model_factory()
                    else:
                        from codeinterp.models import get_model

                        model = get_model(self.settings.model, **self.settings.model_options)
                except Exception as exc:
                    raise ModelUnavailable(
                        f"The model {self.settings.model!r} could not be loaded: {exc} "
                        "Restart `codeinterp serve` with a working --model."
                    ) from exc
                thread_safe = bool(getattr(model, "thread_safe", False))
                self._model = model if thread_safe else LockedModel(model)
            return self._model
