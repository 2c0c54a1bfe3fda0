"""The tuning key: what a tuned schedule is valid for, in readable form (docs/design.md).

Head dims, dtypes, cache capacity and block are compile-time constants and match exactly;
the runtime length T is bucketed to the next power of two, and a lookup that misses its
bucket falls back to the nearest bucket of the same static key.

Keys come from shared files, so a key is checked whenever one is made (docs/design.md):
the kernel and dtype from fixed vocabularies, a backend with a schedule space for that kernel,
a target of two path-safe components, the kernel's static dims as positive ints and a bucket
that is a power of two, all bounded. A key therefore never names a folder outside a database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from schedules import kernels
from schedules import has_space, registered
from schedules.targets import Target

# Input dtypes a kernel is tuned for (the scores of cache_select may be float64).
DTYPES = ("float32", "bfloat16", "float16", "float64")
# Sanity bounds on what a shared key may claim.
MAX_DIM = 1 << 24
MAX_BUCKET = 1 << 40


def _positive_int(value: Any, what: str, limit: int) -> int:
    if type(value) is not int or not 1 <= value <= limit:
        raise ValueError(f"{what}: expected an int from 1 to {limit}, got {value!r:.80}")
    return value


def t_bucket(T: int) -> int:
    """The shape bucket of a sequence length: the next power of two >= T (T >= 1)."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected a positive int, got {T!r}")
    return 1 << (T - 1).bit_length()


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

    def __post_init__(self) -> None:
        """Refuse a key outside the vocabularies (ValueError naming the field)."""
        kernels.check(self.kernel)
        if type(self.backend) is not str or not has_space(self.kernel, self.backend):
            have = sorted(b for k, b in registered() if k == self.kernel)
            raise ValueError(f"backend: expected one of {have} (backends with a {self.kernel} schedule space), "
                             f"got {self.backend!r:.80}")
        Target.parse(self.target)
        if type(self.dtypes) is not str or self.dtypes not in DTYPES:
            raise ValueError(f"dtypes: expected one of {list(DTYPES)}, got {self.dtypes!r:.80}")
        names = tuple(n for n, _ in self.dims)
        static = kernels.STATIC_DIMS[self.kernel]
        if sorted(names) != sorted(static) or names != tuple(sorted(names)):
            raise ValueError(f"dims: expected exactly {list(static)} for {self.kernel}, "
                             f"got {list(names)!r:.80}")
        for n, v in self.dims:
            _positive_int(v, f"dims: {n}", MAX_DIM)
        _positive_int(self.bucket, "bucket: T", MAX_BUCKET)
        if self.bucket & (self.bucket - 1):
            raise ValueError(f"bucket: T: expected a power of two, got {self.bucket}")

    @staticmethod
    def make(kernel: str, backend: str, target: str, dtypes: Any, dims: Mapping[str, int], T: int) -> "TuningKey":
        """The key of a call: ``dims`` the kernel's static dims, ``T`` tokens (bucketed)."""
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
        """Inverse of ``to_json``, strict about every field (a file is untrusted input): raises
        ValueError naming the missing or malformed field, without conversions (the string
        "64" is not the bucket 64, nor is 64.0)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"key: expected a JSON object, got {type(data).__name__}")
        missing = [f for f in ("kernel", "backend", "target", "dtypes", "dims", "bucket") if f not in data]
        if missing:
            raise ValueError(f"key: missing {missing} (a key has kernel, backend, target, dtypes, dims and bucket.T)")
        dims, bucket = data["dims"], data["bucket"]
        if not isinstance(dims, Mapping):
            raise ValueError(f"dims: expected a JSON object of ints, got {type(dims).__name__}")
        if not isinstance(bucket, Mapping) or set(bucket) != {"T"}:
            raise ValueError(f"bucket: expected {{\"T\": power of two}}, got {bucket!r:.80}")
        return TuningKey(data["kernel"], data["backend"], data["target"], data["dtypes"],
                         tuple(sorted(dims.items(), key=lambda item: str(item[0]))), bucket["T"])

    def distance(self, other: "TuningKey") -> float:
        """How far apart two buckets of the same static key are (log2 of the T ratio); inf otherwise."""
        if self.static != other.static:
            return math.inf
        return abs(math.log2(self.bucket) - math.log2(other.bucket))
