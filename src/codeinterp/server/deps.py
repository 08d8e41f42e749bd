"""The one dependency every route takes: the app's `Runtime`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from codeinterp.server.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
