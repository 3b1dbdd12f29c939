"""`mambaout export`: a classifier or backbone to ONNX or OpenVINO IR, optionally int8, checked in its engine; or
(`--run`) a trained anomaly detector as a per-frame step graph, checked against the PyTorch stream."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or OpenVINO IR (dynamic batch and size), fp32 or int8, or a detector's step graph",
    )
    p.add_argument("--model", help="variant name, e.g. mambaout_femto")
    p.add_argument("--run", help="a run folder of `mambaout anomaly train`: export its per-frame step graph")
    p.add_argument("--pretrained", help="weights: .pth/.safetensors file, https URL, or hf-hub:org/repo")
    p.add_argument("--num-classes", type=int, default=None, help="classes (default: the checkpoint's, or 1000)")
    p.add_argument("--mixer", default="conv", help="token mixer: conv, ssm, attn or attn_causal")
    p.add_argument("--features", action="store_true", help="export the backbone: four NCHW feature maps")
    p.add_argument("--format", required=True, help="onnx or openvino")
    p.add_argument("--output", required=True, help="model file (.onnx / .xml) or a folder")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"), help="tracing example")
    p.add_argument("--max-image-size", type=int, default=1024, help="largest side the SSM scan must handle")
    p.add_argument("--int8", action="store_true", help="int8 post-training quantization (the engine's own tool)")
    p.add_argument("--calibration", default="digits", help="'digits' (built in) or a folder of images")
    p.add_argument("--calibration-count", type=int, default=32)
    p.set_defaults(func=run)


def run_step_graph(args: argparse.Namespace) -> int:
    """`mambaout export --run RUN`: the detector's step graph and state.json, checked in its engine on a stream."""
    from pathlib import Path

    from mambaout.anomaly.detector import load_detector
    from mambaout.errors import UserError
    from mambaout.export.availability import require
    from mambaout.export.formats import ENGINE_OF, check_format
    from mambaout.export.step_engine import check_against_torch, load_step_engine
    from mambaout.export.step_graph import export_step_graph, file_sha256
    from mambaout.export.to_onnx import DEFAULT_OPSET

    if args.model or args.features or args.int8 or args.pretrained:
        raise UserError("--run exports a trained detector as it is; drop --model, --pretrained, --features and --int8")
    fmt = check_format(args.format)
    engine = ENGINE_OF[fmt]
    require(engine)
    require("onnx")
    detector, config = load_detector(args.run)
    run_dir = Path(args.run)
    digest = file_sha256(run_dir / "detector.pt" if run_dir.is_dir() else run_dir)
    opset = args.opset or DEFAULT_OPSET
    target = export_step_graph(detector, fmt, args.output, config["image_size"], opset, detector_sha256=digest)
    frames, difference = check_against_torch(detector, load_step_engine(engine, target.parent))
    print(f"wrote {target} and {target.parent / 'state.json'} ({fmt}, opset {opset}, {detector.mixer} step graph)")
    print(f"{engine} vs the PyTorch stream over {frames} frames: max score difference {difference:.2e}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.run:
        return run_step_graph(args)
    if not args.model:
        from mambaout.errors import UserError

        raise UserError("say what to export: --model VARIANT (a classifier or backbone) or --run RUN (a detector)")
    import tempfile
    from pathlib import Path

    from mambaout.export.availability import require
    from mambaout.export.calibration import calibration_images
    from mambaout.export.engines import load_engine, relative_error
    from mambaout.export.formats import ENGINE_OF, check_format, export_model, resolve_output
    from mambaout.export.quantize import quantize_onnx, quantize_openvino
    from mambaout.export.to_onnx import DEFAULT_OPSET, check_image_size
    from mambaout.mixers import check_mixer
    from mambaout.models.factory import create_model

    fmt = check_format(args.format)
    size = check_image_size(args.image_size)
    check_mixer(args.mixer)
    engine = ENGINE_OF[fmt]
    require(engine)  # before the model is built: a missing engine is the first thing to say
    require("onnx")
    model = create_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes, mixer=args.mixer)
    max_tokens = (args.max_image_size // 4) ** 2
    opset = args.opset or DEFAULT_OPSET
    target = resolve_output(args.output, fmt)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_model(model, fmt, Path(tmp) if args.int8 else target, args.features, opset, size, max_tokens)
        if args.int8:
            images = calibration_images(args.calibration, size, args.calibration_count)
            quantize = quantize_onnx if fmt == "onnx" else quantize_openvino
            quantize(fp32, target, images)
        # Check what was written in its engine against PyTorch on one example.
        example = calibration_images("digits", size, count=1)
        ours = load_engine(engine, target)(example)
        reference = load_engine("torch", model, features=args.features)(example)
        errors = [relative_error(o, r) for o, r in zip(ours, reference)]
    kind = "int8" if args.int8 else "fp32"
    print(f"wrote {target} ({fmt}, opset {opset}, {kind}, {'4 feature maps' if args.features else 'logits'})")
    print(f"{engine} vs PyTorch on a {size[0]}x{size[1]} digit: max relative error {max(errors):.2e}")
    return 0
