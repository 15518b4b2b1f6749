"""Checks that run before anything is started or written: Ray address and MLflow store reachable."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


class PreflightError(RuntimeError):
    """An address the sweep needs cannot be reached; worded for the user."""


def is_local_ray(address: str | None) -> bool:
    """Whether `--address` asks for a Ray started here for this sweep (none given, "" or "local")."""
    return address in (None, "", "local")


def check_ray_address(address: str | None, timeout: float = 3.0) -> None:
    """A TCP probe of the GCS port: `ray.init` itself would wait minutes on a dead address."""
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


def local_gpu_count() -> int | None:
    """The GPUs a local Ray would find (it asks NVIDIA's driver library the same way, and honours
    CUDA_VISIBLE_DEVICES), or None where that cannot be told."""
    import os

    try:
        from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

        count = int(NvidiaGPUAcceleratorManager.get_current_node_num_accelerators())
    except Exception:  # noqa: BLE001 - an internal Ray helper: never let it block a sweep
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return count
