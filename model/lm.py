"""The HOLA language model (docs/math.md section 4): pre-norm blocks of mixer + SwiGLU MLP, tied
embeddings, prefill and token-by-token decoding, save/load as JSON config + safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.attention import AttentionMixer
from model.config import HOLAConfig
from model.generate import generate
from model.loss import IGNORE_INDEX, linear_cross_entropy
from model.mixer import HOLAMixer, rms_norm

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(a) * b)


class Block(nn.Module):
    """x + mixer(rmsnorm(x)), then x + swiglu_mlp(rmsnorm(x))."""

    def __init__(self, config: HOLAConfig):
        super().__init__()
        self.mixer_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = AttentionMixer(config) if config.variant == "transformer" else HOLAMixer(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden)

    def forward(self, x, backend: str, return_memory: bool = False, cu_seqlens: Optional[torch.Tensor] = None):
        if cu_seqlens is None:
            out = self.mixer(self.mixer_norm(x), backend=backend, return_memory=return_memory)
        elif isinstance(self.mixer, HOLAMixer):
            out = self.mixer(self.mixer_norm(x), backend=backend, return_memory=return_memory, cu_seqlens=cu_seqlens)
        else:
            raise ValueError(f"cu_seqlens: packed prompts need a recurrent variant, not {self.mixer.config.variant!r}")
        y, mem = out if return_memory else (out, None)
        x = x + y
        x = x + self.mlp(self.mlp_norm(x))
        return (x, mem) if return_memory else x

    def step(self, x, memory, backend: str):
        y, memory = self.mixer.step(self.mixer_norm(x), memory, backend=backend)
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), memory


class HOLALM(nn.Module):
    """Language model over token ids. ``HOLALM(config)(input_ids [B, T]) -> logits [B, T, vocab]``;
    ``HOLALM(config)(input_ids, targets=next_ids) -> loss`` without the logits (training, evaluation).

    ``backend`` (per call, default ``config.backend``) picks the ``hola_dsl.ops`` backend every
    mixer runs its kernels on; the weights are the same whichever computes them.
    """

    def __init__(self, config: HOLAConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
        # GPT-2's scaling of the residual projections by depth.
        for block in self.blocks:
            for proj in (block.mixer.o_proj, block.mlp.down):
                proj.weight.mul_((2 * self.config.n_layers) ** -0.5)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(x), self.embed.weight)  # tied output head

    def forward(self, input_ids: torch.Tensor, backend: Optional[str] = None,
                cu_seqlens: Optional[torch.Tensor] = None, *, targets: Optional[torch.Tensor] = None,
                reduction: str = "mean", softmax_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """input_ids: [B, T] int64 -> logits [B, T, vocab_size] (float32). cu_seqlens (int
        offsets [N + 1], B = 1): N prompts packed along T, each computed as if alone.

        With ``targets`` ([B, T] ids; ``model.loss.IGNORE_INDEX`` where a position is not
        scored): the cross entropy of those logits against them instead, a scalar in nats, the
        ``reduction`` ("mean" or "sum") over the scored positions, computed chunk by chunk
        without ever holding the [B, T, vocab] logits (``model.loss.linear_cross_entropy``,
        which ``softmax_dtype`` is passed to). Training and evaluation go this way; through
        ``forward`` (not a method of its own) so that DistributedDataParallel sees the call.
        """
        backend = backend or self.config.backend
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, backend, cu_seqlens=cu_seqlens)
        if targets is None:
            return self._logits(x)
        if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != tuple(input_ids.shape):
            got = list(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"targets: expected token ids shaped like input_ids {list(input_ids.shape)}, got {got}")
        return linear_cross_entropy(self.norm(x), self.embed.weight, targets, ignore_index=IGNORE_INDEX,
                                    reduction=reduction, softmax_dtype=softmax_dtype)

    def prefill(self, input_ids: torch.Tensor, backend: Optional[str] = None):
        """Run a prompt [B, T] at once; returns (logits [B, T, vocab], memory to decode from)."""
        backend = backend or self.config.backend
        x = self.embed(input_ids)
        memory = []
        for block in self.blocks:
            x, mem = block(x, backend, return_memory=True)
            memory.append(mem)
        return self._logits(x), memory

    def init_decode(self, batch_size: int) -> list:
        """The per-layer memory of ``batch_size`` empty sequences."""
        device = self.embed.weight.device
        return [block.mixer.init_memory(batch_size, device=device) for block in self.blocks]

    def decode_step(self, token_ids: torch.Tensor, memory: list, backend: Optional[str] = None):
        """One token per sequence, each at its own position. token_ids: [B] or [B, 1]. Returns
        (logits [B, vocab], memory); the recurrent mixers update their memory in place."""
        backend = backend or self.config.backend
        x = self.embed(token_ids.reshape(-1, 1))
        new_memory = []
        for block, mem in zip(self.blocks, memory):
            x, mem = block.step(x, mem, backend)
            new_memory.append(mem)
        return self._logits(x)[:, 0], new_memory

    def generate(self, input_ids, max_new_tokens: int, backend: Optional[str] = None, **sampling) -> torch.Tensor:
        """Continue prompts ([B, T], or a list of 1-D prompts of any lengths) by up to
        ``max_new_tokens`` tokens: greedy unless ``sampling`` says otherwise (temperature, top_k,
        top_p, stop_token, seed, pad_token: ``model.generate.generate``). Returns [B, max_new_tokens]."""
        sampling.setdefault("temperature", 0.0)
        return generate(self, input_ids, max_new_tokens, backend=backend, **sampling)

    def save(self, directory: Union[str, Path]) -> None:
        """Write config.json and model.safetensors into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: Union[str, Path], map_location: str = "cpu") -> "HOLALM":
        """Rebuild a model saved with ``save``. A missing, corrupt or mismatched file, or a weight
        that is NaN or inf, is an error naming the file (and the tensor)."""
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"checkpoint: {directory / name} does not exist; expected a directory "
                                        f"written by HOLALM.save (config.json + model.safetensors)")
        model = cls(HOLAConfig.load(directory / CONFIG_FILE))
        state = read_weights(directory / WEIGHTS_FILE, map_location)
        check_weights(state, model.state_dict(), directory / WEIGHTS_FILE)
        model.load_state_dict(state)
        return model.to(map_location)


def read_weights(path: Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file at ``path``; a ValueError naming it if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=map_location)
    except SafetensorError as exc:
        raise ValueError(f"checkpoint: {path} is not a readable safetensors file ({exc})") from None


def check_weights(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """Raise a ValueError naming ``path`` and the tensors when ``state`` misses or adds tensors,
    has a shape other than ``expected``'s, or holds NaN/inf (which would otherwise surface much
    later as an input error of some kernel)."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    problems = [f"missing tensors {missing}"] if missing else []
    problems += [f"unexpected tensors {extra}"] if extra else []
    for name in sorted(set(state) & set(expected)):
        got, want = state[name], expected[name]
        if got.shape != want.shape:
            problems.append(f"{name} has shape {list(got.shape)}, expected {list(want.shape)} (from config.json)")
        elif got.is_floating_point() and not bool(torch.isfinite(got).all()):
            bad = int((~torch.isfinite(got)).sum())
            problems.append(f"{name} has {bad} NaN/inf of {got.numel()} values, expected finite weights")
    if problems:
        raise ValueError(f"checkpoint: {path}: {'; '.join(problems)}")
