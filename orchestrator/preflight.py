"""Checks that run before anything is started or written: Ray address and MLflow store reachable, and a
trial that fits this machine on a local Ray."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from orchestrator.config_errors import ConfigError
from orchestrator.schema import SweepConfig


class PreflightError(RuntimeError):
    """An address the sweep needs cannot be reached; worded for the user."""


def is_local_ray(address: str | None) -> bool:
    """Whether `--address` asks for a Ray started here for this sweep (none given, "" or "local")."""
    return address in (None, "", "local")


def check_ray_address(address: str | None, timeout: float = 3.0) -> None:
    """Asks the address for its Ray cluster id before `ray.init` connects: `ray.init` waits minutes (or for
    ever) on a dead address, and on a port where something other than Ray's GCS listens (an HTTP server, a
    Ray dashboard agent, a process that accepts and never answers)."""
    if is_local_ray(address) or address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise PreflightError(f"--address '{address}' is not HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise PreflightError(f"cannot reach the Ray cluster at --address {address}: {err.strerror or err}") from None
    problem = _gcs_problem(f"{host}:{port}", timeout)
    if problem:
        raise PreflightError(f"--address {address} is not a Ray cluster's head (GCS) port: {problem}")


def _gcs_problem(target: str, timeout: float) -> str | None:
    """One gRPC call of the GCS's own service; None where Ray's GCS answered it (an authentication refusal is
    Ray's GCS answering too), else what was heard instead."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"no answer within {timeout:.0f} s"
            if code == grpc.StatusCode.UNAVAILABLE:
                return "it does not speak gRPC (another program listens there)"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return "a gRPC server answered, but not Ray's GCS"
    return None


def local_gpu_count() -> int | None:
    """The GPUs a local Ray would find (it asks NVIDIA's driver library the same way, and honours
    CUDA_VISIBLE_DEVICES), or None where that cannot be told."""
    try:
        from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

        count = int(NvidiaGPUAcceleratorManager.get_current_node_num_accelerators())
    except Exception:  # noqa: BLE001 - an internal Ray helper: never let it block a sweep
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return count


def local_capacity_problem(config: SweepConfig, file: str | Path = "<sweep>", extra_cpus: float = 0.0,
                           cpus: int | None = None) -> ConfigError | None:
    """On a local Ray, a trial asking for more CPUs than this machine has waits forever (Tune never fails
    it): the problem, or None. `extra_cpus` is what a trial holds beside its workers; a cluster's own
    resources can only be checked once connected."""
    have = cpus or os.cpu_count() or 1
    train = config.train
    workers = train.num_workers if train.uses_torch_trainer else 1
    need = workers * train.cpus_per_worker + extra_cpus
    if need <= have:
        return None
    if workers == 1:
        return ConfigError(file, "train.cpus_per_worker", f"{need:g} CPUs per trial, but this machine has {have}")
    return ConfigError(
        file, "train.num_workers",
        f"{workers} workers x {train.cpus_per_worker:g} train.cpus_per_worker = {need:g} CPUs per trial, but this "
        f"machine has {have}",
    )
