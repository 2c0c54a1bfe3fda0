"""`hola check --dtype/--device`: the tolerance follows the dtype, and a backend that does not
compute the dtype on its device is skipped (or, when named, refused) with the reason."""

import pytest
import torch

from tools.cli import main


def test_bfloat16_check_uses_its_tolerance(capsys):
    assert main(["check", "--dtype", "bfloat16", "--backend", "reference", "--kernel", "cache_select",
                 "--seed", "3", "--no-nvcc"]) == 0
    out = capsys.readouterr().out
    assert "bfloat16 inputs" in out and "<= 0.005" in out and "cache_select  reference" in out


def test_named_backend_without_the_dtype_is_refused(capsys):
    assert main(["check", "--dtype", "bfloat16", "--backend", "tilelang", "--no-nvcc"]) == 2
    assert "--backend: tilelang cannot run here" in capsys.readouterr().err


def test_nothing_to_check_is_a_failure(capsys):
    """Without a GPU, --device cuda leaves no backend: that is said and fails, never "all passed"."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["check", "--device", "cuda", "--kernel", "cache_select", "--no-nvcc"]) == 1
    out = capsys.readouterr().out
    assert "(backend reference not checked:" in out and "nothing checked" in out and "all passed" not in out
