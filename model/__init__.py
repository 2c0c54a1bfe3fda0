"""model/: the HOLA language model (docs/math.md section 4) on the kernels of ``hola_dsl.ops``:
config, mixer (HOLA/GDN/AHN layer and decoding), softmax attention baseline, the LM, its text
(corpora, tokenizers), training and evaluation. The float64 oracle and the chunked reference the
kernels are checked against live a floor below, in ``hola_dsl.reference``."""

from model.attention import AttentionMixer
from model.config import VARIANTS, HOLAConfig
from model.lm import HOLALM
from model.mixer import HOLAMixer, MixerMemory

__all__ = ["AttentionMixer", "HOLAConfig", "HOLALM", "HOLAMixer", "MixerMemory", "VARIANTS"]
