"""Test-session set-up that must happen before anything imports Triton.

Triton decides at decoration time whether a @triton.jit function (its own standard library
included) is interpreted or compiled, so TRITON_INTERPRET=1 has to be in the environment before
the first `import triton` of the session; a test module setting it at its own import is too late
once another module has imported Triton during collection. Ahead-of-time builds still compile
real GPU code with it set (hola_dsl.backends.triton.aot imports the generated modules in compiled mode).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# Scratch tensors of a kernel plan are NaN-poisoned like its outputs (hola_dsl.spec.scratch), so
# a row no launch writes fails the checks.
os.environ.setdefault("HOLA_POISON_SCRATCH", "1")


import pytest  # noqa: E402 - after the environment above, like everything this file imports


@pytest.fixture
def hola_fails(capsys):
    """``hola_fails(argv, *needles)``: run `hola argv` in this process and expect bad input: exit
    code 2 and one error line, no traceback, holding every needle. Returns the line."""

    def run(argv, *needles: str) -> str:
        from tools.cli import main

        capsys.readouterr()
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(n in err for n in needles), err
        return err

    return run


@pytest.fixture
def cuda_build_cache(tmp_path_factory, monkeypatch):
    """One $HOLA_CACHE_DIR shared by every test that lowers or cross-builds TileLang's CUDA
    dialect in a session: lowering a scan phase takes a minute or more, and the tests meet the
    same sources (the sync checks lower the scan's phases at their real dims, the nvcc table
    builds them there); an unchanged source's lowering and nvcc build are then reused
    (``nvcc.cached_lower``, ``nvcc.cached_cross_build``: keyed on the generated source, so a
    kernel that changed is lowered again; their own test checks the reuse)."""
    path = tmp_path_factory.getbasetemp() / "hola-cuda-build-cache"
    monkeypatch.setenv("HOLA_CACHE_DIR", str(path))
    return path
