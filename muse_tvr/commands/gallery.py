"""`muse-tvr gallery add-embeddings | export | merge`: embeddings in and out of a gallery, and merging
the galleries of several workers (`encode --shard i/N` on a scheduler without Ray)."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from . import add_model_args, positive

    p = sub.add_parser("gallery", help="add embeddings to, export from, or merge galleries",
                       description="Move embeddings in and out of a gallery in bounded memory (the .npy is "
                       "memory-mapped and copied in chunks), or merge part galleries into one.")
    cmds = p.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    a = cmds.add_parser("add-embeddings", help="append float32 (N, D) unit rows with N keys",
                        description="Append embeddings made elsewhere. Without model options the gallery "
                        "is raw (searched with --query-npy); with --model/--backbone the embeddings are "
                        "declared to come from that model and its fingerprint must match the gallery's.")
    a.add_argument("--gallery", required=True, help="gallery folder (created if missing)")
    a.add_argument("--npy", required=True, help="float32 (N, D) .npy of L2-normalised rows")
    a.add_argument("--keys", required=True, help="text file with N keys, one per line (UTF-8)")
    a.add_argument("--chunk-rows", type=positive, default=131072, help="rows per copy and per shard")
    add_model_args(a, default_backbone=None, backend=False)
    a.set_defaults(func=run_add)
    e = cmds.add_parser("export", help="write the live rows to a .npy and their keys to a text file")
    e.add_argument("--gallery", required=True)
    e.add_argument("--npy", required=True, help="new float32 (N, D) .npy (must not exist)")
    e.add_argument("--keys", required=True, help="new text file, one key per line (must not exist)")
    e.set_defaults(func=run_export)
    m = cmds.add_parser("merge", help="append the rows of part galleries to one gallery",
                        description="Rows already in --gallery for the same unchanged file are skipped, so "
                        "merging again adds nothing; the parts are left in place (delete them after).")
    m.add_argument("--gallery", required=True, help="destination gallery (created if missing)")
    m.add_argument("parts", nargs="+", help="part galleries, e.g. the outputs of encode --shard i/N")
    m.set_defaults(func=run_merge)


def run_add(args: argparse.Namespace) -> int:
    from ..engine.gallery_io import add_embeddings
    from . import build_model, model_spec

    info = None
    if args.model or args.backbone:
        _, info = build_model(model_spec(args), args.threads)
    res = add_embeddings(args.gallery, args.npy, args.keys, model_info=info, chunk_rows=args.chunk_rows)
    print(f"added {res['added']} rows; gallery {args.gallery} holds {res['rows']}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..engine.gallery_io import export_embeddings

    n = export_embeddings(args.gallery, args.npy, args.keys)
    print(f"exported {n} rows to {args.npy} and {args.keys}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from ..engine.gallery_io import merge_galleries

    res = merge_galleries(args.gallery, args.parts)
    print(f"merged {len(args.parts)} part(s): added {res['added']}, already present {res['duplicates']}; "
          f"gallery {args.gallery} holds {res['rows']} rows", file=sys.stdout)
    return 0
