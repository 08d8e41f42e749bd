"""What the model is shown of its environment: the files in the workspace.

A small model given "analyse the sales data" invents `path_to_your_file.csv`; shown the real
names (and a CSV's header), it uses them. The listing is read on the host side.
"""

from __future__ import annotations

from pathlib import Path

MAX_FILES = 20
HIDDEN = (".", "__pycache__")


def _describe(path: Path, root: Path) -> str:
    size = path.stat().st_size
    text = f"- {path.relative_to(root)} ({_size(size)})"
    if path.suffix.lower() in (".csv", ".tsv") and size:
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                header = f.readline().strip()
        except OSError:
            return text
        if header:
            text += f", columns: {header[:200]}"
    return text


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KB" if n < 1 << 20 else f"{n >> 20} MB"


def workspace_listing(workspace: Path) -> str:
    """A short description of the user's files, or "" when there are none."""
    try:
        files = sorted(
            p
            for p in workspace.rglob("*")
            if p.is_file()
            and not p.is_symlink()
            and not any(part.startswith(HIDDEN) for part in p.relative_to(workspace).parts)
        )
    except OSError:
        return ""
    if not files:
        return ""
    lines = [_describe(p, workspace) for p in files[:MAX_FILES]]
    if len(files) > MAX_FILES:
        lines.append(f"- … and {len(files) - MAX_FILES} more")
    return "Files in the working directory:\n" + "\n".join(lines)
