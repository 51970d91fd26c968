"""Selective scan (the Mamba-1 SSM recurrence), single and bidirectional, (B, L, D) layout.

IMPLEMENTATIONS maps a name to a function with `bidirectional_scan_ref`'s signature (the engine calls it
with keyword arguments): "reference" (a loop over time), "chunked" (the blocked PyTorch scan), "cpp" (the
C++ kernel in bi_scan.h, built on first use) and "triton" (the fused GPU kernel, imported on first call so
the others work without Triton installed)."""
import sys

from .cpp_scan import bidirectional_scan_cpp, cpp_scan_unavailable
from .cpu_chunked import bidirectional_scan_chunked
from .reference import bidirectional_scan_ref, selective_scan_ref


def bidirectional_scan_triton(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b,
                              delta_bias_f, delta_bias_b):
    from .triton_scan import bidirectional_scan_triton as kernel
    return kernel(u_f, delta_f, B_f, C_f, u_b, delta_b, B_b, C_b, z, A_f, A_b, D_f, D_b,
                  delta_bias_f, delta_bias_b)


IMPLEMENTATIONS = {"reference": bidirectional_scan_ref, "chunked": bidirectional_scan_chunked,
                   "cpp": bidirectional_scan_cpp, "triton": bidirectional_scan_triton}

_WARNED: list[str] = []


def fastest_cpu_scan() -> str:
    """"cpp" when the C++ kernel builds and loads here, else "chunked" (the best pure-PyTorch scan), with a
    one-line warning on stderr the first time: a missing compiler costs speed, never correctness."""
    reason = cpp_scan_unavailable()
    if reason is None:
        return "cpp"
    if not _WARNED:
        _WARNED.append(reason)
        print(f"muse-tvr: the C++ scan is unavailable ({reason}); using the PyTorch chunked scan, "
              "several times slower", file=sys.stderr)
    return "chunked"


__all__ = ["selective_scan_ref", "bidirectional_scan_ref", "bidirectional_scan_chunked",
           "bidirectional_scan_cpp", "bidirectional_scan_triton", "IMPLEMENTATIONS", "fastest_cpu_scan"]
