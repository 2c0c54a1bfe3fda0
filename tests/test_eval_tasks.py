"""`hola eval --task` scores any model whose vocabulary holds the task's ids."""

import pytest

from tools.cli import main


@pytest.mark.slow
def test_passkey_model_from_the_tiny_preset_can_be_evaluated(tmp_path, capsys):
    out = tmp_path / "pk"
    assert main(["train", "--task", "passkey", "--preset", "tiny", "--steps", "2", "--eval-every", "2", "--backend", "reference",
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--task", "passkey", "--lengths", "64", "--samples", "2"]) == 0
    assert (out / "passkey.png").stat().st_size > 0
