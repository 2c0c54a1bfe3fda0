"""The on-disk cache of generated kernel sources, shared by every DSL backend's runtime:
write a source once (atomically, so concurrent processes agree on the content) and import it
as a module; and the hash of the emitters' own source files, part of every source's cache key
(an edit to an emitter makes new files, with no version number to bump by hand)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable


def cache_dir(backend: str) -> Path:
    """Where ``backend``'s generated sources live: $HOLA_CACHE_DIR/<backend>, else
    ~/.cache/hola-dsl/<backend>. A $HOLA_CACHE_DIR that is a file is a ValueError naming it."""
    root = os.environ.get("HOLA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "hola-dsl")
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"HOLA_CACHE_DIR: {root} is a file; expected a directory for generated kernels")
    return Path(root) / backend


def write_once(path: Path, make_text: Callable[[], str]) -> Path:
    """Write ``make_text()`` to ``path`` unless it exists already; return ``path``."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = make_text()
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import the Python source at ``path`` as module ``module_name`` (registered in sys.modules,
    which some tools, Triton's JIT among them, need to find a function's source)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def modules_hash(*modules: ModuleType) -> str:
    """A short hash of the source files of ``modules``, in order (the emitters of a backend)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]
