"""`mambaout export`: a classifier or backbone to ONNX or OpenVINO IR, optionally int8, checked in its engine; or
(`--run`) a trained anomaly detector as an encoder graph and a per-frame step graph, checked against the PyTorch
stream."""

from __future__ import annotations

import argparse

from mambaout.engine.config import add_config_flags, config_from_args, dataclass, option


@dataclass
class ExportConfig:
    model: str | None = option(None, "variant name, e.g. mambaout_femto")
    run: str | None = option(None, "a run folder of `mambaout anomaly train`: export its encoder and step graphs")
    pretrained: str | None = option(None, "weights: .pth/.safetensors file, https URL, or hf-hub:org/repo")
    num_classes: int | None = option(None, "classes (default: the checkpoint's, or 1000)")
    mixer: str = option("conv", "token mixer: conv, ssm, attn or attn_causal")
    features: bool = option(False, "export the backbone: four NCHW feature maps")
    format: str | None = option(None, "onnx or openvino")
    output: str | None = option(None, "model file (.onnx / .xml) or a folder")
    opset: int | None = option(None, "ONNX opset (default 18)")
    image_size: tuple[int, int] = option((224, 224), "tracing example")
    max_image_size: int = option(1024, "largest side the SSM scan must handle")
    int8: bool = option(False, "int8 post-training quantization (the engine's own tool)")
    calibration: str = option("digits", "'digits' (built in) or a folder of images")
    calibration_count: int = option(32, "calibration images for --int8")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or OpenVINO IR (dynamic batch and size), fp32 or int8, or a detector's step graph",
    )
    add_config_flags(
        p,
        ExportConfig,
        metavars=dict(image_size=("H", "W"), run="RUN", pretrained="WEIGHTS", output="PATH"),
        required=("format", "output"),
    )
    p.set_defaults(func=run)


def run_step_graph(cfg: ExportConfig) -> int:
    """`mambaout export --run RUN`: the detector's two graphs and state.json, checked in its engine on a stream."""
    from pathlib import Path

    from mambaout.anomaly.detector import load_detector
    from mambaout.errors import UserError
    from mambaout.export.availability import require
    from mambaout.export.formats import ENGINE_OF, check_format
    from mambaout.export.step_engine import check_against_torch, load_step_engine
    from mambaout.export.step_graph import encoder_path, export_step_graph, file_sha256
    from mambaout.export.to_onnx import DEFAULT_OPSET

    if cfg.model or cfg.features or cfg.int8 or cfg.pretrained:
        raise UserError("--run exports a trained detector as it is; drop --model, --pretrained, --features and --int8")
    fmt = check_format(cfg.format)
    engine = ENGINE_OF[fmt]
    require(engine)
    require("onnx")
    detector, config = load_detector(cfg.run)
    run_dir = Path(cfg.run)
    digest = file_sha256(run_dir / "detector.pt" if run_dir.is_dir() else run_dir)
    opset = cfg.opset or DEFAULT_OPSET
    target = export_step_graph(detector, fmt, cfg.output, config["image_size"], opset, detector_sha256=digest)
    frames, difference = check_against_torch(detector, load_step_engine(engine, target.parent))
    state = target.parent / "state.json"
    print(f"wrote {target}, {encoder_path(target)} and {state} ({fmt}, opset {opset}, {detector.mixer} step graph)")
    print(f"{engine} vs the PyTorch stream over {frames} frames: max score difference {difference:.2e}")
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, ExportConfig)
    if cfg is None:
        return 0
    if cfg.run:
        return run_step_graph(cfg)
    if not cfg.model:
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

    fmt = check_format(cfg.format)
    size = check_image_size(cfg.image_size)
    check_mixer(cfg.mixer)
    engine = ENGINE_OF[fmt]
    require(engine)  # before the model is built: a missing engine is the first thing to say
    require("onnx")
    model = create_model(cfg.model, pretrained=cfg.pretrained, num_classes=cfg.num_classes, mixer=cfg.mixer)
    max_tokens = (cfg.max_image_size // 4) ** 2
    opset = cfg.opset or DEFAULT_OPSET
    target = resolve_output(cfg.output, fmt)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_model(model, fmt, Path(tmp) if cfg.int8 else target, cfg.features, opset, size, max_tokens)
        if cfg.int8:
            images = calibration_images(cfg.calibration, size, cfg.calibration_count)
            quantize = quantize_onnx if fmt == "onnx" else quantize_openvino
            quantize(fp32, target, images)
        # Check what was written in its engine against PyTorch on one example.
        example = calibration_images("digits", size, count=1)
        ours = load_engine(engine, target)(example)
        reference = load_engine("torch", model, features=cfg.features)(example)
        errors = [relative_error(o, r) for o, r in zip(ours, reference)]
    kind = "int8" if cfg.int8 else "fp32"
    print(f"wrote {target} ({fmt}, opset {opset}, {kind}, {'4 feature maps' if cfg.features else 'logits'})")
    print(f"{engine} vs PyTorch on a {size[0]}x{size[1]} digit: max relative error {max(errors):.2e}")
    return 0
