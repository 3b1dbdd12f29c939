"""Published and trained weights load without conversion steps, whatever layout or wrapper they come in."""

import hashlib
import http.server
import threading
from functools import partial

import pytest
import torch
from safetensors.torch import save_file

import mambaout
from mambaout import UserError
from mambaout.models.checkpoint import remap_official

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def to_official(sd):
    """timm layout -> the authors' release layout (the inverse of PAPER.md §3's mapping)."""
    import re

    out = {}
    for k, v in sd.items():
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
        if k.startswith("head.norm."):  # the final LN after pooling is top-level `norm` in the release
            k = k[len("head.") :]
        k = k.replace("head.pre_logits.fc.", "head.fc1.").replace("head.pre_logits.norm.", "head.norm.")
        k = k.replace("head.fc.", "head.fc2.")
        out[k] = v
    return out


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    model = mambaout.create_model("mambaout_pico", num_classes=1000).eval()
    with torch.no_grad():
        logits = model(X)
    return model.state_dict(), logits


def logits_of(model):
    with torch.no_grad():
        return model.eval()(X)


def test_official_checkpoint_gives_same_logits_as_timm_layout(source, tmp_path):
    sd, logits = source
    official = to_official(sd)
    assert "downsample_layers.0.conv1.weight" in official and "stages.2.1.fc1.weight" in official
    assert "norm.weight" in official and "head.fc1.weight" in official and "head.fc2.weight" in official
    assert remap_official(official).keys() == sd.keys()
    torch.save(official, tmp_path / "mambaout_pico.pth")
    model = mambaout.create_model("mambaout_pico", pretrained=tmp_path / "mambaout_pico.pth")
    assert torch.equal(logits_of(model), logits)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pth"])
def test_timm_layout_files_load_directly(source, tmp_path, suffix):
    sd, logits = source
    path = tmp_path / f"model{suffix}"
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)
    assert torch.equal(logits_of(mambaout.create_model("mambaout_pico", pretrained=str(path))), logits)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd, "epoch": 7, "optimizer": {"state": {}}},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "arch": "mambaout_pico"},
        lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
        lambda sd: {"model": {"state_dict": to_official(sd)}},
    ],
    ids=["model", "ddp-state_dict", "compiled", "nested-official"],
)
def test_training_checkpoints_are_unwrapped(source, tmp_path, wrap):
    sd, logits = source
    torch.save(wrap(sd), tmp_path / "ckpt.pth")
    assert torch.equal(logits_of(mambaout.create_model("mambaout_pico", pretrained=tmp_path / "ckpt.pth")), logits)


def test_ema_weights_are_taken_when_asked(source, tmp_path):
    sd, logits = source
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({"state_dict": other, "state_dict_ema": sd}, tmp_path / "ckpt.pth")
    model = mambaout.create_model("mambaout_pico", pretrained=tmp_path / "ckpt.pth", use_ema=True)
    assert torch.equal(logits_of(model), logits)
    torch.save({"state_dict": sd}, tmp_path / "no_ema.pth")
    with pytest.raises(UserError, match="no EMA weights"):
        mambaout.create_model("mambaout_pico", pretrained=tmp_path / "no_ema.pth", use_ema=True)


def test_other_num_classes_keeps_the_backbone_and_reinitialises_the_classifier(source, tmp_path):
    sd, _ = source
    torch.save(sd, tmp_path / "in1k.pth")
    model = mambaout.create_model("mambaout_pico", pretrained=tmp_path / "in1k.pth", num_classes=10)
    assert model.head.fc.out_features == 10
    assert torch.equal(model.stages[2].blocks[1].fc1.weight, sd["stages.2.blocks.1.fc1.weight"])
    assert torch.equal(model.head.pre_logits.fc.weight, sd["head.pre_logits.fc.weight"])
    assert model.head.fc.weight.std().item() == pytest.approx(0.02, rel=0.2)
    # and num_classes=None takes the checkpoint's count
    assert mambaout.create_model("mambaout_pico", pretrained=tmp_path / "in1k.pth").num_classes == 1000


def test_checkpoint_of_another_variant_names_the_mismatch_and_the_right_variant(source, tmp_path):
    torch.save(source[0], tmp_path / "pico.pth")
    with pytest.raises(UserError) as err:
        mambaout.create_model("mambaout_femto", pretrained=tmp_path / "pico.pth")
    msg = str(err.value)
    assert "does not fit mambaout_femto" in msg and "shapes differ" in msg and "looks like mambaout_pico" in msg
    assert "\n" not in msg


def test_missing_corrupt_and_unsafe_files_are_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        mambaout.create_model("mambaout_pico", pretrained=tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UserError, match="corrupt, truncated"):
        mambaout.create_model("mambaout_pico", pretrained=tmp_path / "bad.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(UserError, match="could not read checkpoint"):
        mambaout.create_model("mambaout_pico", pretrained=tmp_path / "bad.safetensors")
    torch.save({"model": object.__new__(http.server.HTTPServer)}, tmp_path / "evil.pth")  # arbitrary object
    with pytest.raises(UserError, match="could not read checkpoint"):  # weights_only refuses to unpickle it
        mambaout.create_model("mambaout_pico", pretrained=tmp_path / "evil.pth")
    with pytest.raises(UserError, match="unknown model 'mambaout_tinny'; did you mean 'mambaout_tiny'"):
        mambaout.create_model("mambaout_tinny")


def test_https_url_is_downloaded_once_to_the_cache_and_sha256_checked(source, tmp_path, monkeypatch):
    sd, logits = source
    served = tmp_path / "served"
    served.mkdir()
    torch.save(sd, served / "mambaout_pico.pth")
    digest = hashlib.sha256((served / "mambaout_pico.pth").read_bytes()).hexdigest()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MAMBAOUT_CACHE", str(tmp_path / "cache"))
    url = f"http://127.0.0.1:{server.server_address[1]}/mambaout_pico.pth"
    try:
        model = mambaout.create_model("mambaout_pico", pretrained=url, sha256=digest)
        assert torch.equal(logits_of(model), logits)
        assert len(list((tmp_path / "cache").rglob("mambaout_pico.pth"))) == 1
        server.shutdown()  # the second load must come from the cache
        assert torch.equal(logits_of(mambaout.create_model("mambaout_pico", pretrained=url)), logits)
        with pytest.raises(UserError, match="sha256"):
            mambaout.create_model("mambaout_pico", pretrained=url, sha256="0" * 64)
    finally:
        server.server_close()


def test_hf_hub_id_fetches_model_safetensors(source, tmp_path, monkeypatch):
    sd, logits = source
    save_file(sd, str(tmp_path / "model.safetensors"))
    asked = []

    def fake_download(repo_id, filename, revision=None):
        asked.append((repo_id, filename, revision))
        return str(tmp_path / filename)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = mambaout.create_model("mambaout_pico", pretrained="hf-hub:timm/mambaout_pico.test")
    assert asked == [("timm/mambaout_pico.test", "model.safetensors", None)]
    assert torch.equal(logits_of(model), logits)
