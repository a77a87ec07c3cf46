"""Device mesh and parameter placement.

The mesh has two axes: `data` (pure data parallelism) and `fsdp` (data parallelism whose
parameters and optimizer state are also split across the axis). Placement is one ordered rule
table, `(regex over the param path, PartitionSpec)`, first match wins; a leaf no rule names is
split over `fsdp` along its largest dimension that divides evenly, and is replicated when it is
small or nothing divides (logged, so a silently replicated giant matrix is visible).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from compass_jax import tree

log = logging.getLogger(__name__)

BATCH_AXES = ("data", "fsdp")
# Leaves below this many elements are replicated: gathering them costs more than they save.
MIN_SHARDED_ELEMENTS = 2**16


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `("data", "fsdp")` mesh; -1 on one axis takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    if data == -1:
        data = len(devices) // fsdp
    if fsdp == -1:
        fsdp = len(devices) // data
    if data * fsdp != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} does not use {len(devices)} devices")
    # Auto axes: XLA propagates shardings through the model; we constrain only the batch.
    return jax.make_mesh(
        (data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices
    )


def fsdp_spec(
    path: str, shape: tuple[int, ...], fsdp: int, min_elements: int = MIN_SHARDED_ELEMENTS
) -> PartitionSpec:
    """Split the largest dimension divisible by `fsdp` over the `fsdp` axis."""
    if fsdp == 1 or math.prod(shape) < min_elements:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[dim] % fsdp == 0:
            return PartitionSpec(*[("fsdp" if i == dim else None) for i in range(len(shape))])
    log.info("replicating %s %s: no dimension divisible by fsdp=%d", path, shape, fsdp)
    return PartitionSpec()


def param_shardings(
    params: Any,
    mesh: Mesh,
    rules: Sequence[tuple[str, PartitionSpec]] = (),
    min_elements: int = MIN_SHARDED_ELEMENTS,
) -> Any:
    """A `NamedSharding` per leaf of `params` (arrays or `ShapeDtypeStruct`s; any pytree, so an
    optimizer state whose moments mirror the params is placed like them)."""
    fsdp = mesh.shape["fsdp"]

    def place(path: str, leaf: Any) -> NamedSharding:
        spec = tree.first_match(path, rules)
        if spec is None:
            spec = fsdp_spec(path, tuple(np.shape(leaf)), fsdp, min_elements)
        return NamedSharding(mesh, spec)

    return tree.map_with_keypath(place, params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Examples split over every device of the mesh (both axes), features replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def addressable_rows(s: NamedSharding, shape: tuple[int, ...]) -> np.ndarray:
    """The rows (indices along axis 0) of a global array of `shape` laid out by `s` that this
    process's devices hold, sorted."""
    rows: set[int] = set()
    for index in s.addressable_devices_indices_map(shape).values():
        rows.update(range(*index[0].indices(shape[0])))
    return np.fromiter(sorted(rows), np.int64, len(rows))
