"""The tracing front end and the IR: shapes, errors that point at the kernel line, loops, grid."""

import pytest
import torch

from hola_dsl import eager, ir, lang as hl, registry


@hl.kernel
def _axpy(x: hl.In("N"), y: hl.Out("N"), a: hl.Scalar("float32"), *, BN: int):
    (i,) = hl.grid(hl.cdiv(hl.dim("N"), BN))
    rows = hl.tile(i * BN, BN)
    y[rows] = a * x[rows].to("float32") + 1.0


@hl.kernel
def _bad_shapes(x: hl.In("N"), y: hl.Out("N"), *, BN: int):
    (i,) = hl.grid(1)
    a = x[hl.tile(0, BN)]
    y[hl.tile(0, BN)] = a + hl.zeros((BN * 2,))   # the line the error must name


@hl.kernel
def _prefix(x: hl.In("N"), y: hl.Out("N"), *, BN: int):
    (i,) = hl.grid(1)

    @hl.loop(0, hl.cdiv(hl.dim("N"), BN), carry=hl.zeros((1,)))
    def total(c, acc):
        part = x[hl.tile(c * BN, BN)].to("float32")
        y[hl.tile(c * BN, BN)] = hl.cumsum(part, 0) + acc
        return acc + hl.sum(part, 0)


def test_trace_types_and_text():
    k = _axpy.trace({"x": "float32", "y": "float32"}, BN=16)
    assert [p.kind for p in k.params] == ["size", "in", "out", "scalar"]
    text = k.text()
    assert "load(" in text and "store(" in text and "test_dsl_frontend.py:" in text
    assert k.grid_extents({"N": 33}) == (3,)
    assert k.hash() == _axpy.trace({"x": "float32", "y": "float32"}, BN=16).hash()
    assert k.hash() != _axpy.trace({"x": "float32", "y": "float32"}, BN=32).hash()


def test_eager_masks_the_tail():
    k = _axpy.trace({"x": "float32", "y": "float32"}, BN=16)
    x = torch.arange(33, dtype=torch.float32)
    y = torch.full((33,), float("nan"))
    eager.run(k, {"x": x, "y": y, "a": 2.0})
    assert torch.equal(y, 2 * x + 1)


def test_shape_error_names_the_kernel_line():
    with pytest.raises(hl.DSLError) as err:
        _bad_shapes.trace({"x": "float32", "y": "float32"}, BN=16)
    msg = str(err.value)
    assert "the line the error must name" in msg and "do not broadcast" in msg


def test_loop_carry_and_cumsum():
    k = _prefix.trace({"x": "float32", "y": "float32"}, BN=8)
    assert ir.find_op(k, "loop") is not None
    x = torch.rand(21)
    y = torch.full((21,), float("nan"))
    eager.run(k, {"x": x, "y": y})
    assert torch.allclose(y, x.cumsum(0), atol=1e-5)


def test_loop_carry_type_must_not_change():
    @hl.kernel
    def bad(x: hl.In("N"), *, BN: int):
        hl.grid(1)

        @hl.loop(0, 4, carry=hl.zeros((BN,)))
        def acc(i, a):
            return hl.zeros((BN * 2,))
    with pytest.raises(hl.DSLError, match="carry of type"):
        bad.trace({"x": "float32"}, BN=16)


def test_unit_lower_inverse_is_exact_on_repeated_keys():
    """The forward-substitution meaning keeps digits where the power product loses them."""
    torch.manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(1, 32).expand(64, 32) + 1e-3 * torch.randn(64, 32), dim=-1)
    a = (k @ k.t()).tril(-1)
    (inv,) = registry.get("unit_lower_inverse").eager([a], {}, None)
    eye = torch.eye(64)
    err = ((eye + a).double() @ inv.double() - eye.double()).abs().max().item()
    assert err < 1e-4


def test_every_op_has_a_triton_lowering():
    from hola_dsl.backends.triton.lower import LOWER
    missing = set(registry.OPS) - set(LOWER) - {"const", "loop"}   # inlined / structural
    assert not missing


@pytest.mark.parametrize("dialect", ["cpu", "cuda"])
def test_every_op_has_a_lowering_in_both_tilelang_dialects(dialect):
    """Each dialect is complete: no abstract step of the shared walk left out, and every
    registry op lowered (by the dialect, the shared base or its elementwise lowering)."""
    import inspect

    from hola_dsl.backends.tilelang import lower_cpu, lower_cuda
    emitter = {"cpu": lower_cpu.CpuEmitter, "cuda": lower_cuda.CudaEmitter}[dialect]
    assert not inspect.isabstract(emitter), sorted(emitter.__abstractmethods__)
    assert not [name for name in registry.OPS if not emitter.lowers(name)]
