"""A read-only client of a containerd shim's task API (ttrpc over its unix socket): `ask_shim`
asks `State` of a task's init and execs and its `Pids`, and nothing else (see client.py)."""

from .client import (GO_ZERO_TIME, NAMESPACE_METADATA, SERVICES, PidInfo, ProcessState, ShimAnswer, ShimFailure,
                     ask_shim)
from .ttrpc import FailureKind

__all__ = ["GO_ZERO_TIME", "NAMESPACE_METADATA", "SERVICES", "FailureKind", "PidInfo", "ProcessState",
           "ShimAnswer", "ShimFailure", "ask_shim"]
