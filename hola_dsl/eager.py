"""The eager interpreter: the DSL's own meaning. Runs a traced kernel with PyTorch ops, one
program of the grid after another, on whatever device the tensors live on."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from hola_dsl import ir, registry


class _Context:
    """What an op's eager meaning may need beyond its operands."""

    def __init__(self, device: torch.device, program_id: tuple[int, ...]):
        self.device = device
        self.program_id = program_id
        self.op: ir.Op = None  # the op being run (loops read their region)

    def run_block(self, block: ir.Block, args: list) -> list:
        env = self.env
        for a, x in zip(block.args, args):
            env[a] = x
        for op in block.ops:
            self.op = op
            outs = registry.get(op.name).eager([env[a] for a in op.args], op.attrs, self)
            for r, x in zip(op.results, outs):
                env[r] = x
        return [env[y] for y in block.yields]


def sizes_of(kernel: ir.Kernel, args: dict[str, Any]) -> dict[str, int]:
    """Runtime sizes read off the tensor arguments; checks constant dims and shared sizes."""
    sizes: dict[str, int] = {}
    for p in kernel.tensors():
        x = args[p.name]
        dims = p.value.type.dims
        if x.dim() != len(dims):
            raise ValueError(f"{kernel.name}: argument {p.name} has rank {x.dim()}, expected {len(dims)} {dims}")
        for d, n in zip(dims, x.shape):
            expected = kernel.consts.get(d, sizes.get(d))
            if expected is not None and expected != n:
                raise ValueError(f"{kernel.name}: argument {p.name} dim {d} is {n}, expected {expected}")
            if d not in kernel.consts:
                sizes[d] = int(n)
    return sizes


def run(kernel: ir.Kernel, args: dict[str, Any]) -> None:
    """Run ``kernel`` on ``args`` ({param name: tensor or number}); outputs are written in place."""
    sizes = sizes_of(kernel, args)
    grid = kernel.grid_extents(sizes)
    device = next(args[p.name].device for p in kernel.tensors())
    base: dict = {}
    for p in kernel.params:
        if p.kind == "size":
            base[p.value] = torch.tensor(sizes[p.name], dtype=torch.int32, device=device)
        elif p.kind == "scalar":
            base[p.value] = torch.tensor(args[p.name], dtype=registry.TORCH_DTYPE[p.value.type.dtype], device=device)
        else:
            base[p.value] = args[p.name]
    for pid in itertools.product(*(range(n) for n in grid)):
        ctx = _Context(device, pid)
        ctx.env = dict(base)
        ctx.run_block(kernel.body, [])
