"""The code that runs beside user code: cell semantics, output capture, the worker loop.

Stdlib only (plus codeinterp.outputs), because it runs inside sandboxes and fresh interpreters.
"""
