"""``bettersynth vlm``: move Mini-Gemini checkpoints between the original MGM code's layout and ours.

Example::

    bettersynth vlm import-mgm runs/MGM-2B models/mgm-2b --vision-tower model_zoo/OpenAI/clip-vit-large-patch14-336 \\
        --vision-tower-aux model_zoo/OpenAI/openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup
    bettersynth vlm export-mgm models/mgm-2b runs/MGM-2B-back --vision-tower model_zoo/OpenAI/clip-vit-large-patch14-336
"""

from __future__ import annotations

import argparse
import sys


def _convert(verb: str, done: str):
    """A ``run`` for one conversion verb: call ``bettersynth.vlm.mgm_interop.<verb>``, one line out either way."""

    def run(args: argparse.Namespace) -> int:
        from bettersynth.vlm import mgm_interop

        try:
            out = getattr(mgm_interop, verb)(args.dir, args.out, args.vision_tower, args.vision_tower_aux)
        except mgm_interop.MgmInteropError as exc:
            print(f"bettersynth vlm {verb.replace('_', '-')}: error: {exc}", file=sys.stderr)
            return 1
        print(done.format(src=args.dir, out=out))
        return 0

    return run


import_mgm = _convert("import_mgm", "imported {src} into {out}")
export_mgm = _convert("export_mgm", "exported {src} in MGM's layout to {out}")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def register(subparsers) -> None:
    group = subparsers.add_parser("vlm", help="vision-language model checkpoints: import-mgm, export-mgm")
    group.set_defaults(run=lambda args: _usage(group))  # the bare group prints its verbs (and parses, for --help)
    vlm = group.add_subparsers(dest="vlm_command")
    parser = vlm.add_parser("import-mgm", help="an MGM (dvlab-research/MGM) checkpoint -> a bettersynth Mini-Gemini")
    parser.add_argument("dir", help="the MGM checkpoint folder (config.json, safetensors, tokenizer)")
    parser.add_argument("out", help="the bettersynth model folder to write (missing or empty)")
    parser.add_argument("--vision-tower", help="HF CLIP folder (default: the config's mm_vision_tower, if local)")
    parser.add_argument("--vision-tower-aux",
                        help="open_clip ConvNeXt folder (default: the config's mm_vision_tower_aux, if local)")
    parser.set_defaults(run=import_mgm)
    parser = vlm.add_parser("export-mgm", help="a bettersynth Mini-Gemini -> the MGM checkpoint layout")
    parser.add_argument("dir", help="the bettersynth Mini-Gemini folder")
    parser.add_argument("out", help="the MGM checkpoint folder to write (missing or empty)")
    parser.add_argument("--vision-tower", help="written as mm_vision_tower (MGM opens it as a local folder)")
    parser.add_argument("--vision-tower-aux", help="written as mm_vision_tower_aux (likewise)")
    parser.set_defaults(run=export_mgm)
