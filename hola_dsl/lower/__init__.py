"""Backend lowerings of the tile IR, one module per backend (op name -> lowering)."""
