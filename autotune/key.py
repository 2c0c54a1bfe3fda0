"""The tuning key: what a tuned schedule is valid for, in readable form (DESIGN.md).

Head dims, dtypes, cache capacity and block are compile-time constants and match exactly;
the runtime length T is bucketed to the next power of two, and a lookup that misses its
bucket falls back to the nearest bucket of the same static key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

# Which Shape fields are compile-time constants of each kernel (dims in the key).
STATIC_DIMS = {
    "delta_scan": ("K", "V"),
    "cache_select": ("W", "C"),
    "cache_read": ("K", "V", "W", "C"),
}


def t_bucket(T: int) -> int:
    """The shape bucket of a sequence length: the next power of two >= T (T >= 1)."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected a positive int, got {T!r}")
    return 1 << (T - 1).bit_length()


def static_dims(kernel: str, shape: Any) -> dict[str, int]:
    """The compile-time dims of ``kernel`` read from a ``hola_dsl.testing.Shape`` (or any object
    with those attributes)."""
    if kernel not in STATIC_DIMS:
        raise ValueError(f"kernel: expected one of {list(STATIC_DIMS)}, got {kernel!r}")
    return {d: int(getattr(shape, d)) for d in STATIC_DIMS[kernel]}


def dtype_name(dtype: Any) -> str:
    """torch.float32 -> "float32"; strings pass through."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class TuningKey:
    """kernel, backend, target name ("nvidia-h100/sm_90"), dtypes ("bfloat16"), static dims and the
    T bucket. ``static`` is everything but the bucket: records sharing it are "nearby shapes"."""

    kernel: str
    backend: str
    target: str
    dtypes: str
    dims: tuple[tuple[str, int], ...]
    bucket: int

    @staticmethod
    def make(kernel: str, backend: str, target: str, dtypes: Any, dims: Mapping[str, int], T: int) -> "TuningKey":
        return TuningKey(kernel, backend, target, dtype_name(dtypes),
                         tuple(sorted((str(n), int(v)) for n, v in dims.items())), t_bucket(int(T)))

    @property
    def static(self) -> tuple:
        return (self.kernel, self.backend, self.target, self.dtypes, self.dims)

    @property
    def id(self) -> str:
        """Readable one-line form, e.g. "delta_scan|reference|amd-epyc/x86_64-avx512|float32|K=128,V=128|T<=4096"."""
        dims = ",".join(f"{n}={v}" for n, v in self.dims)
        return f"{self.kernel}|{self.backend}|{self.target}|{self.dtypes}|{dims}|T<={self.bucket}"

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "backend": self.backend, "target": self.target, "dtypes": self.dtypes,
                "dims": dict(self.dims), "bucket": {"T": self.bucket}}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "TuningKey":
        """Inverse of ``to_json``; raises ValueError naming the missing or malformed field."""
        try:
            bucket = data["bucket"]["T"] if isinstance(data["bucket"], Mapping) else data["bucket"]
            return TuningKey(str(data["kernel"]), str(data["backend"]), str(data["target"]), str(data["dtypes"]),
                             tuple(sorted((str(n), int(v)) for n, v in dict(data["dims"]).items())), int(bucket))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"key: expected kernel, backend, target, dtypes, dims and bucket.T, got {data!r} ({exc})") from exc

    def distance(self, other: "TuningKey") -> float:
        """How far apart two buckets of the same static key are (log2 of the T ratio); inf otherwise."""
        if self.static != other.static:
            return math.inf
        return abs(math.log2(self.bucket) - math.log2(other.bucket))
