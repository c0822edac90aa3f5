"""The settings of ``dslbench adapt`` (:class:`AdaptConfig`, validated with messages naming the
option), its result, its errors, and the published recipe the final checkpoint records."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SAVE_DTYPES = ("auto", "float32", "bfloat16")

# Settings a resumed run must share with the run it continues (anything else may change).
RESUME_KEYS = ("objective", "base", "data", "batch_size", "grad_accum", "seq_len", "response_len",
               "prompt_format", "instruction", "seed", "data_seed", "objective_options", "world_size")

# The published recipe (DSL-LLaDA at 8B).
PUBLISHED_RECIPE = {"max_steps": 1000, "lr": 2e-5, "warmup_steps": 100, "schedule": "constant_with_warmup",
                    "weight_decay": 0.1, "grad_clip": 1.0, "precision": "bf16", "block_size": 4096,
                    "global_batch": "8 GPUs x 1 x 64 accumulation"}


class AdaptError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


class OutDirError(AdaptError):
    pass


class NonFiniteLossError(AdaptError):
    pass


@dataclass
class AdaptConfig:
    base: str
    out: str
    objective: str = "dsl"
    data: str = "synth"
    max_steps: int = 1000
    resume: bool = False
    lr: float = 2e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 4096
    response_len: int | None = None
    prompt_format: str = "plain"
    instruction: str | None = None
    seed: int = 0
    data_seed: int | None = None
    save_every: int = 100
    keep_checkpoints: int = 2
    precision: str = "auto"
    save_dtype: str = "auto"
    device: str = "auto"
    log_every: int = 1
    progress: bool = True
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    objective_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        from dslbench.training.data import PROMPT_FORMATS
        from dslbench.training.objectives import OBJECTIVES

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        need(isinstance(self.base, str) and bool(self.base), "--base is required (a checkpoint directory or hub id)")
        need(isinstance(self.out, str) and bool(self.out), "--out is required (an output directory)")
        need(self.objective in OBJECTIVES, f"--objective {self.objective!r} is not valid; allowed: {', '.join(sorted(OBJECTIVES))}")
        need(int(self.max_steps) >= 1, f"--max-steps {self.max_steps} must be >= 1")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr {self.lr} must be > 0")
        need(int(self.warmup_steps) >= 0, f"--warmup-steps {self.warmup_steps} must be >= 0")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, f"--weight-decay {self.weight_decay} must be >= 0")
        need(self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip >= 0),
             f"--grad-clip {self.grad_clip} must be >= 0 (0 disables clipping)")
        need(int(self.batch_size) >= 1, f"--batch-size {self.batch_size} must be >= 1")
        need(int(self.grad_accum) >= 1, f"--grad-accum {self.grad_accum} must be >= 1")
        need(int(self.seq_len) >= 2, f"--seq-len {self.seq_len} must be >= 2")
        need(self.response_len is None or 1 <= int(self.response_len) < int(self.seq_len),
             f"--response-len {self.response_len} must lie in [1, --seq-len)")
        need(self.prompt_format in PROMPT_FORMATS,
             f"--prompt-format {self.prompt_format!r} is not valid; allowed: {', '.join(PROMPT_FORMATS)}")
        need(int(self.save_every) >= 0, f"--save-every {self.save_every} must be >= 0 (0: only at the end)")
        need(int(self.keep_checkpoints) >= 1, f"--keep-checkpoints {self.keep_checkpoints} must be >= 1")
        need(self.precision in PRECISIONS, f"--precision {self.precision!r} is not valid; allowed: {', '.join(PRECISIONS)}")
        need(self.save_dtype in SAVE_DTYPES, f"--save-dtype {self.save_dtype!r} is not valid; allowed: {', '.join(SAVE_DTYPES)}")
        need(int(self.log_every) >= 1, f"--log-every {self.log_every} must be >= 1")

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else int(self.data_seed)


@dataclass
class AdaptResult:
    out: Path
    steps: int
    final_loss: float | None
    tokens_per_s: float | None
    losses: list[float]
    resumed_from: int | None = None
    already_done: bool = False



def run_record(cfg: AdaptConfig, objective_config: dict, world_size: int) -> dict:
    rec = asdict(cfg)
    rec.pop("resume", None)
    rec.pop("progress", None)
    rec["adam_betas"] = list(cfg.adam_betas)
    rec["data_seed"] = cfg.effective_data_seed
    rec["objective_options"] = objective_config
    rec["world_size"] = world_size
    return rec
