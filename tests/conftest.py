"""Test-session set-up that must happen before anything imports Triton.

Triton decides at decoration time whether a @triton.jit function (its own standard library
included) is interpreted or compiled, so TRITON_INTERPRET=1 has to be in the environment before
the first `import triton` of the session; a test module setting it at its own import is too late
once another module has imported Triton during collection. Ahead-of-time builds still compile
real GPU code with it set (hola_dsl.aot imports the generated modules in compiled mode).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
