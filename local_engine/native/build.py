"""Compile kernels.cpp into a shared library in the cache dir (g++ -O3 -march=native -fopenmp).

The library's name carries a hash of the source, the flags and the CPU's feature flags, so an edit
or another machine builds afresh. ``python -m local_engine.native.build`` builds it ahead of time
(``make setup`` does) and says whether it loads.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels.cpp")
HEADERS = tuple(sorted(Path(__file__).parent.glob("*.h")))  # included by kernels.cpp
FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC", "-std=c++17")
_TIMEOUT_S = 120


class BuildError(RuntimeError):
    """No compiler, or it failed: the message says which and why."""


def cache_dir() -> Path:
    """HYBRIDGW_NATIVE_DIR, else ~/.cache/hybridgw/native. Not under HYBRIDGW_CACHE_DIR, which tests point
    at fresh folders: a library named by its content's hash is safe to share, and one build serves all."""
    root = os.environ.get("HYBRIDGW_NATIVE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "hybridgw" / "native"


def compiler() -> str:
    return os.environ.get("CXX", "g++")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def library_path(extra_flags: tuple[str, ...] = ()) -> Path:
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in (SOURCE, *HEADERS)))
    digest.update(" ".join((compiler(), *FLAGS, *extra_flags, _cpu_flags())).encode())
    return cache_dir() / f"hgkernels-{digest.hexdigest()[:16]}.so"


def build(force: bool = False, extra_flags: tuple[str, ...] = ()) -> Path:
    """The library's path, compiled first unless already there; raises BuildError. ``extra_flags`` (after
    the usual ones) build a variant, e.g. ``-march=x86-64-v3``: the AVX2 paths a CPU without AVX512 takes."""
    target = library_path(extra_flags)
    if target.exists() and not force:
        return target
    if shutil.which(compiler()) is None:
        raise BuildError(f"no C++ compiler ({compiler()!r} not found)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename: concurrent builds (parallel tests) never see half a file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler(), *FLAGS, *extra_flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                              timeout=_TIMEOUT_S)
        if done.returncode != 0:
            raise BuildError(f"{compiler()} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{compiler()} failed: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def main() -> int:
    from local_engine.native.kernels import load_kernels

    try:
        path = build(force="--force" in sys.argv)
    except BuildError as exc:
        print(f"native kernels: not built: {exc}", file=sys.stderr)
        return 1
    kernels = load_kernels()
    print(f"native kernels: {path} ({'loads' if kernels is not None else 'does not load'})")
    return 0 if kernels is not None else 1


if __name__ == "__main__":
    sys.exit(main())
