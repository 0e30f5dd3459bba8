"""`face-agent models convert`: convert dlib's face-recognition ResNet (.dat) to ONNX in the engines folder.

The onnxruntime and tensorrt embedding backends do this themselves on first use; the command does it
ahead of time (e.g. at install) and says where the file is and whether it is the reference conversion.
The .dat is `[embedding] model` (or --dat), else the copy in the face-recognition-models package. An
existing, intact conversion is kept unless --force.
"""

from __future__ import annotations

import argparse

from agent.commands._common import action, actions_of, config_of, fail
from agent.files import file_sha256


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="convert dlib's face-recognition ResNet to ONNX (engines folder)")
    actions = actions_of(p, "models_action")
    convert = action(actions, "convert", run_convert,
                     help="convert the dlib ResNet .dat to ONNX into [paths] engines")
    convert.add_argument("--dat", help="the .dat to convert (default: [embedding] model, else the "
                         "face-recognition-models copy)")
    convert.add_argument("--force", action="store_true", help="convert again even if an intact copy exists")



def run_convert(args: argparse.Namespace) -> int:
    from agent.vision import dlib_resnet
    from agent.vision.dlib_convert import ensure_onnx
    from agent.vision.embed import ModelFileError, resnet_dat_path

    cfg = config_of(args)
    try:
        dat = cfg.resolve(args.dat) if args.dat else resnet_dat_path(cfg.embedding, cfg.base_dir)
        if not dat.is_file():
            return fail(f"{dat}: no such file")
        onnx_path = ensure_onnx(dat, cfg.path("engines"), force=args.force)
    except (ModelFileError, dlib_resnet.DlibFormatError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot write to {cfg.path('engines')}: {exc}")
    dat_sha = file_sha256(dat)
    onnx_sha = file_sha256(onnx_path)
    known = dlib_resnet.KNOWN_CONVERSIONS.get(dat_sha)
    verdict = ("the reference conversion" if onnx_sha == known else
               "differs from the reference conversion" if known else "no reference for this .dat")
    print(f"{onnx_path}\n  from {dat}\n  dat sha256  {dat_sha}\n  onnx sha256 {onnx_sha} ({verdict})")
    return 0
