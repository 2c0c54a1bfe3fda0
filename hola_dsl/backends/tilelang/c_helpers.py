"""The C the CPU dialect puts in a kernel's prelude and calls with ``T.call_extern``: a
vectorisable expf, register-blocked dot micro-kernels and blocked transposes. Each function
gives a helper's name and its C text for the shapes asked; the emitter writes each once."""

from __future__ import annotations

# exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in two FMA steps (Cody-Waite; FMAs
# keep -fassociative-math from merging them), exp(r) by Cephes' degree-6 polynomial: within
# 1e-7 relative of exp over float32's normal range (measured: 7.5e-8). Results below 2^-126
# (x < -87) flush to 0, -inf gives 0, x > 88 gives inf, NaN stays NaN. Branch-free, so gcc
# vectorises the loops that call it.
EXPF_NAME = "hola_expf"
EXPF = r"""
extern "C" inline __attribute__((always_inline)) float hola_expf(float x) {
  float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
  float r = __builtin_fmaf(n, -0.693359375f, xc);
  r = __builtin_fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  y = x < -87.0f ? 0.0f : y * scale;
  y = x > 88.0f ? __builtin_inff() : y;
  return x != x ? x : y;
}""".strip("\n")

# gcc's float abs builtins, per element type (inlined as one vector and-not).
FABS = {"float32": "__builtin_fabsf", "float64": "__builtin_fabs"}


def dot(M: int, N: int, K: int, mr: int, nr: int, ta: bool, accumulate: bool) -> tuple[str, str]:
    """(name, C text) of a micro-kernel C[M, N] (+)= A @ B for float32 row-major tiles (A is
    [K, M] when ``ta``). Counted loops over constant bounds and an [mr, nr] accumulator are the
    shape gcc vectorises into a register-blocked FMA loop."""
    name = f"hola_dot_{M}x{N}x{K}_{mr}x{nr}{'_ta' if ta else ''}{'_acc' if accumulate else ''}"
    a = f"A[kk * {M} + i0 * {mr} + ii]" if ta else f"A[(i0 * {mr} + ii) * {K} + kk]"
    init = f"C[(i0 * {mr} + ii) * {N} + j0 * {nr} + jj]" if accumulate else "0.0f"
    return name, "\n".join([
        f'extern "C" __attribute__((noinline)) int32_t {name}(float* A, float* B, float* C) {{',
        f"  float acc[{mr} * {nr}];",
        f"  for (int i0 = 0; i0 < {M // mr}; i0++) for (int j0 = 0; j0 < {N // nr}; j0++) {{",
        f"    for (int ii = 0; ii < {mr}; ii++) for (int jj = 0; jj < {nr}; jj++) acc[ii * {nr} + jj] = {init};",
        f"    for (int kk = 0; kk < {K}; kk++) for (int ii = 0; ii < {mr}; ii++) for (int jj = 0; jj < {nr}; jj++)",
        f"      acc[ii * {nr} + jj] += {a} * B[kk * {N} + j0 * {nr} + jj];",
        f"    for (int ii = 0; ii < {mr}; ii++) for (int jj = 0; jj < {nr}; jj++)",
        f"      C[(i0 * {mr} + ii) * {N} + j0 * {nr} + jj] = acc[ii * {nr} + jj];",
        "  }",
        "  return 0;",
        "}",
    ])


def transpose(R: int, C: int, block: int = 16) -> tuple[str, str]:
    """(name, C text) of D[j, i] = S[i, j] for a float32 [R, C] tile, swept in ``block``-square
    blocks: a column-order sweep of a row-major tile thrashes L1 when rows are a power of two
    apart."""
    name = f"hola_transpose_{R}x{C}"
    return name, "\n".join([
        f'extern "C" __attribute__((noinline)) int32_t {name}(float* S, float* D) {{',
        f"  for (int i0 = 0; i0 < {R}; i0 += {block}) for (int j0 = 0; j0 < {C}; j0 += {block})",
        f"    for (int j = j0; j < (j0 + {block} < {C} ? j0 + {block} : {C}); j++)",
        f"      for (int i = i0; i < (i0 + {block} < {R} ? i0 + {block} : {R}); i++)",
        f"        D[j * {R} + i] = S[i * {C} + j];",
        "  return 0;",
        "}",
    ])
