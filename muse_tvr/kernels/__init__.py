"""Kernels, each in its own subpackage with its plain PyTorch reference beside the fast code.

Importing this package must stay cheap (no triton, no torch): every layer imports it.
"""
import os

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
