"""Subcommands of the `muse-tvr` CLI, one module each.

Each module defines `register(subparsers)`, which adds its parser and sets `func=run` on it. Modules
here import only the standard library at top level so that `muse-tvr --help` stays fast; the work
imports torch and the engine inside `run`.
"""
