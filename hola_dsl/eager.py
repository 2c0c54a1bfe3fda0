"""The eager interpreter: the DSL's own meaning. Runs a traced kernel with PyTorch ops, one
program of the grid after another, on whatever device the tensors live on."""

from __future__ import annotations

import itertools
from typing import Any, Mapping

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


def run(kernel: ir.Kernel, args: Mapping[str, Any]) -> None:
    """Run ``kernel`` on ``args`` ({param name: tensor or number}); outputs are written in place."""
    sizes = kernel.sizes_of(args)
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
