"""The `muse-tvr` command line: collects the subcommands of `muse_tvr.commands` and dispatches."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from . import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muse-tvr", description="MUSE text-video retrieval engine")
    parser.add_argument("--version", action="version", version=f"muse-tvr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = "muse-tvr"
    shown = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        # The engine's warnings (truncated video, long query) are for the user: no source line echo.
        if issubclass(category, UserWarning) and not issubclass(category, (DeprecationWarning, FutureWarning)):
            print(f"{command}: warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        args = build_parser().parse_args(argv)
        command = f"muse-tvr {args.command}"
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Errors raised for bad input carry a message meant for the user: print it without a traceback.
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A folder that cannot be written, a full disk: name the file and the reason, not the stack.
        where = f"{e.filename}: " if e.filename else ""
        print(f"{command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a failure to explain: one line, the shell's 128 + SIGINT.
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
