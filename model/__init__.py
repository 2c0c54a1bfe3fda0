"""model/: the float64 oracle, the chunked reference, and the HOLA language model.

``from model import HOLAConfig, HOLALM`` works, but nothing heavy is imported until asked for:
hola_dsl imports model.reference at import time, so this package must not import hola_dsl back.
"""

_EXPORTS = {
    "HOLAConfig": "model.config",
    "VARIANTS": "model.config",
    "HOLALM": "model.lm",
    "HOLAMixer": "model.mixer",
    "MixerMemory": "model.mixer",
    "AttentionMixer": "model.attention",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
