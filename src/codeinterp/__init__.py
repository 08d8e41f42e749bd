"""codeinterp: a code interpreter for your own language model.

A model writes code; codeinterp runs it at once in a stateful, sandboxed session and hands the
results back as material for the model's next step.
"""

__version__ = "0.1.0.dev0"
