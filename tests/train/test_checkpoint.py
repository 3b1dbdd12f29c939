"""Checkpoint files: atomic replacement, RNG states that survive a weights-only load, weights create_model reads."""

import random

import numpy as np
import pytest
import torch

import mambaout
from mambaout.engine.checkpoint import (
    atomic_write,
    export_weights,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mambaout.errors import UserError


def test_a_write_that_dies_halfway_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.arange(1000.0)})

    def dies_halfway(f):
        f.write(b"PK\x03\x04" + b"\0" * 5000)  # the start of a zip that never gets finished
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_halfway)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.arange(1000.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_a_torn_file_is_reported_as_one_sentence(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match=r"checkpoint .*last.pt cannot be read .*; it is not a last.pt"):
        load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_exported_safetensors_load_with_create_model(tmp_path):
    model = mambaout.create_model("mambaout_pico", num_classes=10)
    export_weights(tmp_path / "best.safetensors", model.state_dict(), {"model": "mambaout_pico", "epoch": 3})
    again = mambaout.create_model("mambaout_pico", num_classes=10, pretrained=tmp_path / "best.safetensors")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
