"""Kernels, each in its own subpackage with its plain PyTorch reference beside the fast code.

Importing this package must stay cheap (no triton, no torch): every layer imports it.
"""
import os
import re

# The values Triton itself reads as true for TRITON_INTERPRET (triton.knobs env_bool, case-insensitive);
# anything else, unset included, means compiled GPU kernels.
_TRUE = ("1", "true", "on", "yes", "y")


def triton_interpreting() -> bool:
    """Whether Triton kernels run in interpreter mode: TRITON_INTERPRET parsed as Triton parses it.

    Read from the environment at every call, never cached at import: tests change the variable within
    one process, and `aot.compile_isolated` hands a child process an environment without it. The mode
    itself is fixed per kernel when its module is imported (`@triton.jit` builds an interpreter object or
    a compiled kernel from TRITON_INTERPRET at definition time), so set the variable before the first
    Triton kernel module is imported (the kernels' `triton_*.py` load on first use); this function
    reports the setting, it cannot switch kernels that are already defined.
    """
    return os.environ.get("TRITON_INTERPRET", "").lower() in _TRUE


def interpreter_problem() -> str | None:
    """A one-line reason when the Triton interpreter is on but cannot work with the installed triton and
    numpy (Triton < 3.8's interpreter converts arrays with an API numpy 2.4 removed), else None."""
    if not triton_interpreting():
        return None
    import numpy
    import triton

    def version(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:2])
    if version(triton.__version__) < (3, 8) and version(numpy.__version__) >= (2, 4):
        return (f"TRITON_INTERPRET=1 needs triton >= 3.8 or numpy < 2.4; found triton {triton.__version__} "
                f"with numpy {numpy.__version__}")
    return None
