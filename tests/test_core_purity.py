"""The core is pure: it imports only the standard library and never reads a clock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "gateway" / "core"


def test_core_imports_only_the_standard_library() -> None:
    """Importing gateway.core loads no module outside the standard library and gateway.core."""
    probe = (
        "import sys; before = set(sys.modules); import gateway.core; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    foreign = [
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names
        and name not in ("gateway", "gateway.core")
        and not name.startswith("gateway.core.")
    ]
    assert loaded, "the probe saw no module load at all"
    assert foreign == []


def test_core_never_reads_a_clock_or_does_io() -> None:
    """No module of the core names a clock, asyncio, logging, or file and socket I/O."""
    forbidden_modules = {"asyncio", "logging", "socket", "time", "os", "io", "sqlite3", "random"}
    forbidden_calls = {"now", "utcnow", "today", "time", "monotonic", "open", "print"}
    offences = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [alias.name for alias in node.names]
                )
                offences += [
                    f"{path.name}: import {n}"
                    for n in names
                    if n.split(".")[0] in forbidden_modules
                ]
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in forbidden_calls:
                    offences.append(f"{path.name}:{node.lineno}: calls {name}()")
    assert len(list(CORE.glob("*.py"))) >= 4
    assert offences == []
