"""The DSL's ground truth, below the model: ``oracle`` (the float64 token-by-token recurrences
of docs/math.md sections 1 to 3, ``naive_*``) and ``chunked`` (the fast, differentiable PyTorch
implementation behind backend "reference")."""
