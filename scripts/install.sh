#!/usr/bin/env bash
# Installs hola-dsl and its test extra into the current Python environment.
# A machine without torch gets the CPU wheel torch==2.13.0 first, so that the torch range in
# pyproject.toml is already satisfied and pip never pulls the multi-GB CUDA wheels; a machine
# that already has torch (say a CUDA build on a GPU box) keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "install.sh: no torch found, installing the CPU build torch==2.13.0"
    "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[test]"
# GPT-2's BPE rank table (whisper/assets/gpt2.tiktoken) for model/tokenizer.py; whisper's own
# dependencies are not needed, only that file.
"$PY" -m pip install -q --no-deps openai-whisper
# flash-linear-attention's naive references, which tests/test_fla_dropin.py checks the drop-in
# (hola_dsl/fla.py) against: pure Python, so no dependencies; optional (the test skips without).
"$PY" -m pip install -q --no-deps "fla-core==0.6.0" einops \
    || echo "install.sh: fla-core/einops not installed; tests/test_fla_dropin.py will skip"
echo "install.sh: hola-dsl installed ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
