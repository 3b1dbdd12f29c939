"""The `mambaout` command: help without loading torch, no abbreviated flags, one sentence for each mistake."""

import subprocess
import sys

import pytest

from mambaout.cli import COMMANDS, main


def _help_in_fresh_process(args: list[str]) -> str:
    """What `mambaout ARGS` prints, followed by whether torch got imported."""
    code = f"import sys\nfrom mambaout.cli import main\ntry:\n main({args!r})\nexcept SystemExit:\n pass\n"
    code += "print('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_help_lists_every_command_without_importing_torch():
    out = _help_in_fresh_process(["--help"])
    assert out.strip().endswith("False")
    for name in ("study", "train", "detect", "segment", "bench"):
        assert f"    {name} " in out and name in COMMANDS


@pytest.mark.parametrize("command", [["train"], ["detect", "train"], ["segment", "train"]])
def test_subcommand_help_does_not_import_torch(command):
    code = (
        f"import sys\nfrom mambaout.cli import main\ntry:\n main({command + ['--help']!r})\nexcept SystemExit:\n pass\n"
    )
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--print-config" in out and out.strip().endswith("False")


@pytest.mark.parametrize(
    "args, flag",
    [(["train", "--epoch", "3"], "--epoch"), (["detect", "train", "--coco", "x", "--iter", "2"], "--iter")],
)
def test_an_abbreviated_flag_is_refused_not_guessed(args, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(args + ["--print-config"])
    assert e.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_dense_train_flags_come_from_the_config_and_print_config_resolves_them(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 0.002\n")
    args = ["detect", "train", "--coco", "d", "--config", str(tmp_path / "c.yaml"), "--lr", "0.004", "--print-config"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epochs: 3\n" in out and "lr: 0.004\n" in out and "weight_decay: 0.05\n" in out  # flag > YAML > default
    assert main(["segment", "train", "--ade20k", "d", "--print-config"]) == 0
    assert "weight_decay: 0.01\n" in capsys.readouterr().out  # each task states its own defaults once
    (tmp_path / "bad.yaml").write_text("epoch: 3\n")
    assert main(["detect", "train", "--config", str(tmp_path / "bad.yaml"), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'epoch' in config file" in err and "(did you mean 'epochs'?)" in err
