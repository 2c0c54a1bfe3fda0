"""hola_dsl.fla against flash-linear-attention's own naive references (fla.ops.gated_delta_rule
.naive), on random and repeated-key inputs, dense and packed (cu_seqlens), with grouped value
heads; fla's layouts, dtypes and argument checks. Skips where fla-core/einops are absent.

fla's package __init__ imports all of fla (slow, and GPU-minded); the naive references need
only torch and einops, so their file is loaded by itself."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

pytest.importorskip("einops")
_FLA = importlib.util.find_spec("fla")
if _FLA is None or not _FLA.submodule_search_locations:
    pytest.skip("flash-linear-attention (fla-core) is not installed", allow_module_level=True)
_NAIVE_PATH = os.path.join(list(_FLA.submodule_search_locations)[0], "ops", "gated_delta_rule", "naive.py")
if not os.path.exists(_NAIVE_PATH):
    pytest.skip(f"fla has no gated_delta_rule naive references at {_NAIVE_PATH}", allow_module_level=True)
_spec = importlib.util.spec_from_file_location("_fla_gdn_naive", _NAIVE_PATH)
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)

from hola_dsl import ops  # noqa: E402
from hola_dsl.fla import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule  # noqa: E402
from hola_dsl.testing import rel_err  # noqa: E402

TOL = 1e-5          # both sides compute in float32 (docs/tolerances.md's float32 row)
LENGTHS = (1, 63, 64, 130)


def _inputs(B, T, H, HV, K, V, case, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)
    k = r(B, T, H, K)
    if case == "repeated":      # near-identical keys, beta = 1, no decay
        k = k[:, :1].expand(B, T, H, K) + 1e-3 * r(B, T, H, K)
        g, beta = torch.zeros(B, T, HV), torch.ones(B, T, HV)
    else:
        g, beta = -torch.rand(B, T, HV, generator=gen), torch.rand(B, T, HV, generator=gen)
    return dict(q=ops.l2norm(r(B, T, H, K)), k=ops.l2norm(k), v=r(B, T, HV, V), g=g, beta=beta), r(B, HV, K, V)


def _naive(fn, x, h0, cu=None):
    """fla's naive reference (no GVA, no cu_seqlens of its own): q/k heads repeated for GVA,
    each packed sequence alone."""
    rep = x["v"].shape[2] // x["q"].shape[2]
    q, k = (t.repeat_interleave(rep, dim=2) for t in (x["q"], x["k"]))
    call = lambda s, e, h: fn(q[:, s:e], k[:, s:e], x["v"][:, s:e], **{
        "g": x["g"][:, s:e], "beta": x["beta"][:, s:e]}, initial_state=h, output_final_state=True)
    if cu is None:
        return call(0, q.shape[1], h0)
    outs = [call(s, e, h0[i:i + 1]) for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist()))]
    return torch.cat([o for o, _ in outs], 1), torch.cat([h for _, h in outs], 0)


@pytest.mark.parametrize("case", ["random", "repeated"])
@pytest.mark.parametrize("packed", [False, True])
def test_matches_fla_naive(case, packed):
    H, HV, K, V = 1, 2, 16, 16
    if packed:
        cu = torch.tensor([0] + torch.tensor(LENGTHS).cumsum(0).tolist(), dtype=torch.long)
        x, h0 = _inputs(1, sum(LENGTHS), H, HV, K, V, case)
        h0 = torch.randn(len(LENGTHS), HV, K, V, generator=torch.Generator().manual_seed(1))
    else:
        cu = None
        x, h0 = _inputs(2, 130, H, HV, K, V, case)
    o, ht = chunk_gated_delta_rule(**x, initial_state=h0, output_final_state=True, cu_seqlens=cu,
                                   hola_backend="eager")
    assert o.dtype == x["v"].dtype and o.shape == x["v"].shape and ht.dtype == torch.float32
    ro, rh = _naive(naive.naive_recurrent_gated_delta_rule, x, h0, cu)
    assert rel_err(o, ro) <= TOL and rel_err(ht, rh) <= TOL
    co, ch = _naive(naive.naive_chunk_gated_delta_rule, x, h0, cu)
    assert rel_err(o, co) <= TOL and rel_err(ht, ch) <= TOL
    fo, fh = fused_recurrent_gated_delta_rule(**x, initial_state=h0, output_final_state=True, cu_seqlens=cu,
                                              hola_backend="reference")
    assert rel_err(fo, ro) <= TOL and rel_err(fh, rh) <= TOL


def test_fla_options_and_errors():
    x, h0 = _inputs(1, 70, 2, 2, 16, 16, "random")
    ref, ref_h = chunk_gated_delta_rule(**x, initial_state=h0, output_final_state=True, hola_backend="reference")
    # state_v_first: [N, HV, V, K] states in and out
    o, ht = chunk_gated_delta_rule(**x, initial_state=h0.transpose(-1, -2).contiguous(), output_final_state=True,
                                   state_v_first=True, hola_backend="reference")
    assert torch.equal(o, ref) and torch.equal(ht, ref_h.transpose(-1, -2))
    # in-kernel sigmoid of beta and the GDN gate
    logits, a_log, dt = torch.randn(1, 70, 2), torch.randn(2) * 0.1, torch.randn(2)
    raw_g = torch.randn(1, 70, 2)
    o, _ = chunk_gated_delta_rule(x["q"], x["k"], x["v"], raw_g, logits, use_beta_sigmoid_in_kernel=True,
                                  use_gate_in_kernel=True, A_log=a_log, dt_bias=dt, hola_backend="reference")
    g = -a_log.exp() * torch.nn.functional.softplus(raw_g + dt)
    ro, _ = naive.naive_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], torch.sigmoid(logits), g)
    assert rel_err(o, ro) <= TOL
    # no gate, no beta: g = 0, beta = 1 in the recurrent form
    o, _ = fused_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], hola_backend="reference")
    ro, _ = naive.naive_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], torch.ones(1, 70, 2), torch.zeros(1, 70, 2))
    assert rel_err(o, ro) <= TOL
    # what fla accepts and this does not support is an error, never ignored
    for kwargs, needle in [(dict(allow_neg_eigval=True, use_beta_sigmoid_in_kernel=True), "allow_neg_eigval"),
                           (dict(chunk_indices=torch.zeros(1, 2, dtype=torch.long)), "chunk_indices"),
                           (dict(cp_context=object()), "cp_context"),
                           (dict(chunk_size=128), "chunk_size"),
                           (dict(some_new_flag=True), "some_new_flag")]:
        with pytest.raises((ValueError, TypeError), match=needle):
            chunk_gated_delta_rule(**x, hola_backend="reference", **kwargs)
    with pytest.raises(ValueError, match="gk"):
        fused_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], gk=torch.zeros(1, 70, 2, 16))
    with pytest.raises(ValueError, match="num_v_heads"):
        chunk_gated_delta_rule(x["q"], x["k"], x["v"][:, :, :1].expand(1, 70, 3, 16), x["g"][..., :1].expand(1, 70, 3),
                               x["beta"][..., :1].expand(1, 70, 3))
