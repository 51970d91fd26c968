"""Kernels, each in its own subpackage with its plain PyTorch reference beside the fast code."""
