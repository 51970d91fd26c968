"""Depthwise causal / anti-causal conv1d with bias and optional SiLU, (B, L, D) layout."""
from .reference import causal_conv1d_ref

__all__ = ["causal_conv1d_ref"]
