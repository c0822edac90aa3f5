"""Data-parallel set-up of a backend and the hooks lm-eval >= 0.4.12 calls on it
(``all_gather``, ``gather_object``, ``barrier``): each launched rank decodes its share."""

from __future__ import annotations

import atexit
import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"model arg device={device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        # lm-eval's CLI passes device=cuda:0 by default; fall back like its own HF backend does.
        log.warning("device=%s requested but CUDA is not available: using cpu", device)
        return torch.device("cpu")
    return dev


def _close_process_group() -> None:
    """Tear the process group down before interpreter shutdown does: left to it, a gloo rank can
    abort ("terminate called without an active exception") after its work and files are done,
    and the launcher then reports the whole run as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launched_world_size() -> int:
    """Processes of this launch, from the launcher's environment (torchrun sets WORLD_SIZE;
    mpirun, which ``accelerate launch --cpu --mpirun_hostfile`` uses, its own variables)."""
    import os

    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var])
    return 1


class DistributedMixin:
    """``_setup_distributed`` (called by the backend's ``__init__`` once ``self.args`` is parsed)
    and lm-eval's data-parallel hooks; ``rank`` / ``world_size`` are lm-eval's ``LM`` properties."""

    def _setup_distributed(self) -> None:
        """Data parallel under ``torchrun`` / ``accelerate launch``: each rank decodes its share.

        accelerate picks a distributed backend for a launched process only on an accelerator or
        when told ``cpu=True``; without it, every process of a CPU launch believed it was rank 0
        of 1 and decoded every document. So the resolved device decides: CPU ranks meet over gloo
        (MPI under mpirun), GPU ranks over NCCL, each on its own GPU."""
        self.accelerator = None
        device = resolve_device(self.args["device"])
        launched = launched_world_size()
        if launched > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=device.type == "cpu")
            atexit.register(_close_process_group)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
            if self._world_size != launched:
                raise RuntimeError(
                    f"{self.NAME}: launched as {launched} processes but accelerate set up "
                    f"{self._world_size} ({self.accelerator.distributed_type}); every process would decode "
                    "every document. Launch with torchrun --nproc_per_node N or accelerate launch --multi_gpu"
                )
            if device.type != "cpu":  # accelerate names CPU ranks cpu:N, which safetensors refuses
                device = self.accelerator.device
        self._device = device


    @property
    def device(self) -> torch.device:
        return self._device

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size <= 1:
            return tensor
        return self.accelerator.gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list | None:
        if self.world_size <= 1:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()
