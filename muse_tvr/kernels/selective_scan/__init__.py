"""Selective scan (Mamba-1 SSM recurrence), single and bidirectional, (B, L, D) layout."""
from .reference import bidirectional_scan_ref, selective_scan_ref

__all__ = ["selective_scan_ref", "bidirectional_scan_ref"]
