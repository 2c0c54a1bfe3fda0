"""The backend registry: one table from backend name to the package that implements it.

A backend package (``hola_dsl/backends/<name>/``) defines ``BACKEND = Backend(...)``; a DSL
backend makes it with the one adapter of ``hola_dsl.backends.dsl`` from how it runs a traced
kernel and how it completes a schedule. Packages are imported when first asked for, so that a
missing optional toolchain (Triton, TileLang) only disables its own backend.

Gradients: a DSL backend differentiates an op when the op's backward kernel
(``<op>_backward`` in ``schedules.kernels``) exists and the backend has a schedule space for it
(``backward_kernel``); ``hola_dsl.ops`` then wraps the pair as one autograd-aware custom op. A
backend whose ``run`` autograd can follow itself (the PyTorch reference; the eager interpreter,
for an op without a backward kernel) says so with ``differentiable``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

import schedules
from schedules.kernels import DIFFERENTIABLE_OPS, KERNELS

# name -> module defining BACKEND. Adding a backend is one line here.
BACKEND_MODULES: dict[str, str] = {
    "reference": "hola_dsl.backends.reference",
    "eager": "hola_dsl.backends.eager",
    "triton": "hola_dsl.backends.triton",
    "tilelang": "hola_dsl.backends.tilelang",
}

# Preference order for backend="auto", per tensor device type: the first that is available,
# runs the inputs' dtype and, when a gradient is needed, differentiates the op (``resolve``).
# On the CPU TileLang's C dialect is the fastest (benchmarks/train_step.py).
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "tilelang", "reference"),
    "cpu": ("tilelang", "reference"),
}


@dataclass(frozen=True)
class Backend:
    """One way of running the kernels.

    ``run(kernel, *inputs, config=None, **options)`` runs kernel ``kernel`` (a name of
    ``schedules.kernels``) on validated, normalised arguments (see ``hola_dsl.ops``: q/k already
    L2-normalised when asked, ``scale`` a float), ``config`` a schedule dict or None (the
    backend's default), and returns the kernel's result. ``unavailable`` returns None when the
    backend can run here, else a one-line reason. ``devices`` lists the torch device types it accepts; ``unavailable_on``
    (device type -> None or a reason) says when one of them cannot run here although the
    backend can (Triton takes CPU tensors only in its interpreter). ``differentiable``:
    whether autograd follows ``run`` itself (PyTorch ops); a DSL backend differentiates an op
    through its backward kernel instead (``backward_kernel``, ``differentiates``). Without
    either, inputs that require grad are refused rather than silently cut from the graph.
    ``dsl``: the backend runs the kernel specs of ``hola_dsl.kernels`` (``hola_dsl.ops`` calls
    it through opaque custom ops, which ``torch.compile`` does not trace into).
    ``dtype_problem(device_type, dtype)`` returns None when the backend computes inputs of
    ``dtype`` on ``device_type`` tensors, else a one-line reason (asked before work starts,
    e.g. by `hola tune`, so that no trial runs for a dtype that cannot run).
    ``prepare``: see the field.
    """

    name: str
    description: str
    run: Callable[..., Any]
    devices: tuple[str, ...] = ("cpu",)
    unavailable: Callable[[], Optional[str]] = field(default=lambda: None)
    differentiable: bool = False
    unavailable_on: Callable[[str], Optional[str]] = field(default=lambda device_type: None)
    dtype_problem: Callable[[str, torch.dtype], Optional[str]] = field(default=lambda device_type, dtype: None)
    # DSL backends: (kernel, config, device, dtype) -> (completed schedule, spec.Runner), what
    # ``run`` works out on every call; a caller that launches one kernel many times (decoding,
    # hola_dsl.decode) keeps it. None for backends that run no DSL kernels.
    prepare: Optional[Callable[..., Any]] = None
    dsl: bool = False


def backward_kernel(backend: Backend, op: str) -> Optional[str]:
    """The kernel that computes the gradient of ``op`` on ``backend``: ``<op>_backward`` when that
    kernel exists and ``backend`` is a DSL backend with a schedule space for it, else None."""
    name = f"{op}_backward"
    return name if backend.dsl and name in KERNELS and schedules.has_space(name, backend.name) else None


def differentiates(backend: Backend, op: Optional[str] = None, packed: bool = False) -> bool:
    """Whether gradients flow through ``op`` (a kernel name; None: every op that has gradients,
    ``schedules.kernels.DIFFERENTIABLE_OPS``) on ``backend``: by autograd itself or by the op's
    backward kernel (which takes no packed sequences, ``packed``: cu_seqlens, yet)."""
    if backend.differentiable:
        return True
    return not packed and all(backward_kernel(backend, o) is not None for o in ((op,) if op else DIFFERENTIABLE_OPS))


_loaded: dict[str, Backend] = {}
_import_errors: dict[str, str] = {}


def names() -> list[str]:
    """All registered backend names, available or not."""
    return list(BACKEND_MODULES)


def get(name: str) -> Backend:
    """The backend called ``name``; raises ValueError for an unknown name or one that cannot load."""
    if name not in BACKEND_MODULES:
        raise ValueError(f"backend: unknown backend {name!r}; expected one of {names() + ['auto']}")
    if name not in _loaded:
        try:
            module = importlib.import_module(BACKEND_MODULES[name])
        except ImportError as exc:  # an optional toolchain is missing
            _import_errors[name] = f"{type(exc).__name__}: {exc}"
            raise ValueError(f"backend: {name!r} cannot be loaded here ({_import_errors[name]})") from exc
        _loaded[name] = module.BACKEND
    return _loaded[name]


def unavailable_reason(name: str) -> Optional[str]:
    """None when backend ``name`` can run on this machine, else why not."""
    try:
        backend = get(name)
    except ValueError as exc:
        return str(exc)
    return backend.unavailable()


def runs_on(name: str, device_type: str) -> Optional[str]:
    """None when backend ``name`` runs tensors of ``device_type`` on this machine, else why not."""
    reason = unavailable_reason(name)
    if reason is not None:
        return reason
    backend = get(name)
    if device_type not in backend.devices:
        return f"it runs on {list(backend.devices)} tensors, not {device_type}"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no GPU here"
    return backend.unavailable_on(device_type)


def available(device_type: Optional[str] = None) -> list[Backend]:
    """Backends that can run here (and, if given, on tensors of ``device_type``)."""
    return [get(n) for n in names()
            if (unavailable_reason(n) if device_type is None else runs_on(n, device_type)) is None]


def resolve(name: str, device_type: str, grad_of: Optional[str] = None, op: Optional[str] = None,
            dtype: Optional[torch.dtype] = None, packed: bool = False) -> Backend:
    """The backend to use for ``name`` (which may be "auto") on tensors of ``device_type``.

    ``grad_of`` names an input that requires grad (None when no gradient is needed): "auto"
    then only picks a backend that differentiates ``op`` (``differentiates``; None: any op),
    and a named backend without a backward is an error rather than outputs silently cut off
    from the graph. "auto" also skips backends that cannot compute inputs of ``dtype``."""
    if name == "auto":
        for candidate in AUTO_ORDER.get(device_type, ("reference",)):
            if candidate in BACKEND_MODULES and runs_on(candidate, device_type) is None:
                backend = get(candidate)
                if ((grad_of is None or differentiates(backend, op, packed))
                        and (dtype is None or backend.dtype_problem(device_type, dtype) is None)):
                    return backend
        raise ValueError(f"backend: no backend available for {device_type} tensors"
                         + (f" that computes gradients ({grad_of} requires grad)" if grad_of else ""))
    backend = get(name)
    reason = backend.unavailable()
    if reason is not None:
        raise ValueError(f"backend: {name!r} is not available here: {reason}")
    if device_type not in backend.devices:
        raise ValueError(
            f"backend: {name!r} runs on {list(backend.devices)} tensors, got {device_type} tensors"
        )
    reason = backend.unavailable_on(device_type)
    if reason is not None:
        raise ValueError(f"backend: {name!r} cannot run {device_type} tensors here: {reason}")
    if grad_of is not None and not differentiates(backend, op, packed):
        grads = [b for b in names() if unavailable_reason(b) is None and differentiates(get(b), op, packed)]
        what = (f" of {op}" if op else "") + (" on packed sequences (cu_seqlens)" if packed else "")
        raise ValueError(
            f"backend: {name!r} computes no gradients{what}, but {grad_of} requires grad; train with a "
            f"differentiable backend ({', '.join(grads)}), or call it under torch.no_grad()"
        )
    return backend


def needs_grad(**tensors: Optional[torch.Tensor]) -> Optional[str]:
    """The name of the first input that requires grad while autograd is recording, else None."""
    if not torch.is_grad_enabled():
        return None
    return next((n for n, x in tensors.items() if x is not None and x.requires_grad), None)
