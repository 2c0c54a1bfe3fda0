"""hola-dsl: hybrid-memory linear attention kernels written once in a tile DSL.

The public entry points are :func:`hola_dsl.ops.delta_scan`, :func:`hola_dsl.ops.cache_select`
(with :func:`hola_dsl.ops.lola_select` for policy "lola") and :func:`hola_dsl.ops.cache_read`
(see the README's API section); decoding's, a few new tokens per sequence against carried
memory, are :func:`hola_dsl.decode.delta_step` and :func:`hola_dsl.decode.cache_read_step`.
"""

from hola_dsl.ops import cache_read, cache_select, delta_scan, lola_select

__all__ = ["delta_scan", "cache_select", "lola_select", "cache_read"]
