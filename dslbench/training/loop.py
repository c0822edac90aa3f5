"""The adaptation loop behind ``dslbench adapt``: accelerate, AdamW, warm-up-then-constant
schedule, gradient accumulation and clipping, atomic periodic checkpoints and exact resume.

Output directory (``--out``)::

    OUT/adapt_run.json            the run's settings (written first; marks OUT as an adapt run)
    OUT/adapt_log.jsonl           one JSON line per logged step: loss, lr, grad norm, tokens/s ...
    OUT/checkpoints/step-NNNNNNNN/  resume state (accelerate ``save_state``: model incl. the
                                  objective's modules, optimizer, scheduler, RNG states of every
                                  process) + ``trainer_state.json`` (step, data position, tokens)
    OUT/checkpoints/latest        name of the newest complete resume state
    OUT/config.json, model-0000i-of-0000N.safetensors + model.safetensors.index.json, tokenizer
                                  files, adapt_config.json (+ dsl_config.json)
                                  the final checkpoint in the evaluation layout, written last

Atomicity (every file operation goes through :mod:`dslbench.fsio`, whose crash points the test
suite kills the process at, one by one): a resume state is written into
``checkpoints/.tmp-step-N`` and renamed into place when complete; ``latest`` is replaced
atomically; older states beyond ``keep_checkpoints`` are renamed to ``.trash-*`` before they are
deleted, so a half-deleted state is never taken for a resume state. The final checkpoint is built
in a staging folder by the objective's own atomic writer (``save_checkpoint`` /
``save_dsl_checkpoint``) and moved into ``OUT`` with ``config.json`` removed first and put back
last, so OUT is loadable only when its weights are complete. A crash at any point leaves the
previous resume state intact; the next run removes what the crash left (temporary files,
staging folders, trash) and cuts ``adapt_log.jsonl`` back to the resumed step, so the log holds
each step once. A folder whose run wrote no resume state yet (killed, or its data failed to
load) holds nothing to continue: a new run, or a resume with other settings, starts it afresh.

Exactness: every random draw of an objective comes from a generator seeded by
``(seed, step, micro-step, process)``; the data order is a pure function of the seed and the
number of micro-batches consumed (:mod:`dslbench.training.data`). Resuming restores the model,
optimizer, scheduler and RNG states, so on CPU a run stopped at any checkpoint and resumed ends
with bitwise-identical weights to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from dslbench import fsio
from dslbench.errors import writing

RUN_FILE = "adapt_run.json"
LOG_FILE = "adapt_log.jsonl"
ADAPT_CONFIG_FILE = "adapt_config.json"
CKPT_DIR = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
STAGING = ".final-staging"
TRASH = ".trash-"
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


class ConstantWithWarmup:
    """LR factor: ``step / warmup`` for ``step < warmup``, then 1 (transformers'
    ``get_constant_schedule_with_warmup``; a picklable object so the scheduler state round-trips)."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        return 1.0


# ---------------------------------------------------------------------------------------------
# Small helpers


def step_generator(seed: int, step: int, micro: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    digest = hashlib.sha256(f"dslbench-adapt/{seed}/{step}/{micro}/{rank}".encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def _write_json_atomic(path: Path, data: Any) -> None:
    fsio.write_json_atomic(data, path)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _run_record(cfg: AdaptConfig, objective_config: dict, world_size: int) -> dict:
    rec = asdict(cfg)
    rec.pop("resume", None)
    rec.pop("progress", None)
    rec["adam_betas"] = list(cfg.adam_betas)
    rec["data_seed"] = cfg.effective_data_seed
    rec["objective_options"] = objective_config
    rec["world_size"] = world_size
    return rec


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete resume state under ``OUT/checkpoints`` (None when there is none)."""
    ckpts = Path(out) / CKPT_DIR
    pointer = ckpts / LATEST
    if pointer.is_file():
        cand = ckpts / pointer.read_text(encoding="utf-8").strip()
        if (cand / TRAINER_STATE).is_file():
            return cand
    done = sorted(p for p in ckpts.glob("step-*") if (p / TRAINER_STATE).is_file()) if ckpts.is_dir() else []
    return done[-1] if done else None


def _leftovers(out: Path) -> list[Path]:
    """What a killed run leaves that no run continues from: temporary files, staging folders,
    half-written resume states and trash."""
    from dslbench.models.tiny import recover_staged_checkpoint

    if out.is_dir():
        recover_staged_checkpoint(out / STAGING)  # a final checkpoint moved aside is put back first
    found = [*out.glob(f".{RUN_FILE}.tmp-*"), *out.glob(f".{LOG_FILE}.tmp-*"), *out.glob(f".{ADAPT_CONFIG_FILE}.tmp-*"),
             *out.glob(f".{STAGING}*"), out / STAGING]
    ckpts = out / CKPT_DIR
    found += [*ckpts.glob(".tmp-*"), *ckpts.glob(f"{TRASH}*"), *ckpts.glob(f".{LATEST}.tmp*")]
    return [p for p in dict.fromkeys(found) if p.exists() or p.is_symlink()]


def _clean_leftovers(out: Path) -> None:
    for stale in _leftovers(out):
        fsio.remove_tree(stale)


def _inspect_out(out: Path) -> str:
    if not out.exists():
        return "absent"
    if not out.is_dir():
        return "file"
    if (out / RUN_FILE).is_file():
        return "run"
    stale = set(_leftovers(out))
    rest = [p for p in out.iterdir() if p not in stale and not (p.name == CKPT_DIR and p.is_dir()
            and all(q in stale for q in p.iterdir()))]
    if not rest:
        return "empty"  # nothing, or only what a run killed before its first file left
    return "other"


def _started(out: Path) -> bool:
    """True when the run in OUT has something to continue: a resume state or a final checkpoint."""
    return latest_checkpoint(out) is not None or (out / "config.json").is_file()


def _check_out_dir(out: Path, resume: bool) -> str:
    state = _inspect_out(out)
    if state == "file":
        raise OutDirError(f"--out {out} is a file; give a directory")
    if state == "other":
        names = sorted(p.name for p in out.iterdir())[:5]
        raise OutDirError(
            f"--out {out} is not empty and holds no dslbench adapt run (it has {', '.join(names)}...); "
            "refusing to write into it: choose a new or empty directory"
        )
    if state == "run" and not _started(out):
        return "unstarted"
    if state == "run" and not resume:
        ck = latest_checkpoint(out)
        where = f"a resume state at step {_read_json(ck / TRAINER_STATE)['step']}" if ck else "no resume state yet"
        raise OutDirError(
            f"--out {out} already holds an adaptation run ({where}); pass --resume to continue it, "
            "or choose another --out"
        )
    return state


def _check_resume_compatible(previous: dict, current: dict, out: Path) -> list[str]:
    diffs = [k for k in RESUME_KEYS if previous.get(k) != current.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: run has {previous.get(k)!r}, now {current.get(k)!r}" for k in diffs)
        raise OutDirError(f"--resume: {out} was started with different settings ({detail}); "
                          "use the same settings or another --out")
    return [k for k in current if k not in RESUME_KEYS and k not in ("max_steps", "save_every", "keep_checkpoints",
            "log_every", "device", "out") and previous.get(k) != current.get(k)]


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"
    if precision == "fp32":
        return "no"
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("--precision fp16 needs a GPU; use fp32 (or auto) on CPU")
    return precision


# ---------------------------------------------------------------------------------------------
# The run


def run_adapt(
    cfg: AdaptConfig,
    on_step_end: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """Adapt ``cfg.base`` with ``cfg.objective`` and write ``cfg.out``; see the module docstring.

    ``on_step_end(step, loss)`` is called after every optimizer step (after any checkpoint of that
    step is written); raising from it stops the run there (tests use it to simulate a crash).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from dslbench.models.loading import resolve_device
    from dslbench.training.data import build_data
    from dslbench.training.objectives import AdaptModule, make_objective

    cfg.validate()
    out = Path(cfg.out).expanduser().resolve()
    objective = make_objective(cfg.objective, **cfg.objective_options)

    device = resolve_device(cfg.device) if os.environ.get("WORLD_SIZE", "1") == "1" else None
    use_cpu = device is not None and device.type == "cpu"
    mixed = _resolve_precision(cfg.precision, device or torch.device("cuda"))
    accelerator = Accelerator(
        mixed_precision=mixed,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=use_cpu,
        step_scheduler_with_optimizer=False,
    )
    main = accelerator.is_main_process
    world = accelerator.num_processes

    state = _check_out_dir(out, cfg.resume)
    if main and state in ("run", "empty", "unstarted"):
        _clean_leftovers(out)

    record = _run_record(cfg, objective.config(), world)
    final_ready = (out / "config.json").is_file() and (out / ADAPT_CONFIG_FILE).is_file()
    if state == "run":
        changed = _check_resume_compatible(_read_json(out / RUN_FILE), record, out)
        if final_ready and _read_json(out / ADAPT_CONFIG_FILE).get("steps") == cfg.max_steps:
            if main:
                print(f"dslbench adapt: {out} is already complete ({cfg.max_steps} steps); nothing to do")
            return AdaptResult(out, cfg.max_steps, None, None, [], already_done=True)
        if changed and main:
            print(f"dslbench adapt: note: resuming with changed settings: {', '.join(changed)}")

    # ---- model, objective modules, data
    set_seed(cfg.seed)
    # An objective for another model format (uniform: DiffusionGemma) loads its own base.
    backbone, tokenizer, info, preloaded, base_dir = getattr(objective, "load_base", _load_base)(cfg.base)
    extras = objective.build(backbone, tokenizer, info, base_dir, preloaded)
    module = AdaptModule(backbone, extras, objective, info)
    objective.configure_trainable(module)
    module.train()
    data = build_data(cfg.data, tokenizer, info, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                      seed=cfg.effective_data_seed, prompt_format=cfg.prompt_format,
                      response_len=cfg.response_len, instruction=cfg.instruction)

    # Nothing is written to OUT before the model and the data have loaded without error.
    resume_from = latest_checkpoint(out) if state == "run" else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if state == "unstarted":  # nothing to continue: start afresh
            print(f"dslbench adapt: {out} holds a run that wrote no resume state; starting it afresh")
            for stale in (out / LOG_FILE, out / CKPT_DIR, out / RUN_FILE):
                fsio.remove_tree(stale)
        _write_json_atomic(out / RUN_FILE, record)  # (on resume: the settings now in force)
        _trim_log(out, int(_read_json(resume_from / TRAINER_STATE)["step"]) if resume_from is not None else 0)
    accelerator.wait_for_everyone()

    # ---- optimiser and schedule
    groups = objective.param_groups(module, cfg.lr, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, ConstantWithWarmup(cfg.warmup_steps))

    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds_plugin is not None:  # no dataloader is prepared: tell DeepSpeed the batch geometry
        ds_cfg = ds_plugin.deepspeed_config
        ds_cfg["train_micro_batch_size_per_gpu"] = cfg.batch_size
        ds_cfg["gradient_accumulation_steps"] = cfg.grad_accum
        ds_cfg["train_batch_size"] = cfg.batch_size * cfg.grad_accum * world
        if ds_cfg.get("gradient_clipping", "auto") == "auto":
            ds_cfg["gradient_clipping"] = float(cfg.grad_clip or 0.0)
    module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)

    start_step, tokens_seen, resumed_loss = 0, 0, None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        tstate = _read_json(resume_from / TRAINER_STATE)
        start_step, tokens_seen = int(tstate["step"]), int(tstate.get("tokens_seen", 0))
        resumed_loss = tstate.get("loss")
        if main:
            print(f"dslbench adapt: resuming {out} from step {start_step} ({resume_from.name})")
            _append_log(out, {"event": "resume", "step": start_step, "checkpoint": resume_from.name})
    elif cfg.resume and main:
        print(f"dslbench adapt: nothing to resume in {out}; starting from step 0")

    if start_step > cfg.max_steps:
        raise AdaptError(f"--max-steps {cfg.max_steps} is below the resumed step {start_step} of {out}")

    # ---- train
    unwrapped = accelerator.unwrap_model(module)
    all_params = list(module.parameters())  # the full list: FSDP's clip needs the model's own parameters
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc=f"adapt {cfg.objective}",
               disable=not (cfg.progress and main), dynamic_ncols=True)
    losses: list[float] = []
    t_run, tok_run = 0.0, 0
    window_t, window_tok = time.perf_counter(), 0
    last_ckpt = resume_from
    step = start_step
    try:
        for step in range(start_step, cfg.max_steps):
            t0 = time.perf_counter()
            step_loss, step_tokens, metrics = 0.0, 0, {}
            for micro in range(cfg.grad_accum):
                k = step * cfg.grad_accum + micro
                batch = data.micro_batch(k, accelerator.process_index, world).to(accelerator.device)
                gen = step_generator(cfg.seed, step, micro, accelerator.process_index)
                with accelerator.accumulate(module):
                    out_ = module(batch.input_ids, batch.attention_mask, batch.response_mask, gen)
                    loss = out_.loss
                    value = loss.detach().float()
                    if world > 1:
                        value = accelerator.reduce(value, reduction="mean")
                    if not bool(torch.isfinite(value)):
                        where = last_ckpt.name if last_ckpt is not None else "none (no resume state written yet)"
                        raise NonFiniteLossError(
                            f"non-finite loss ({float(value)}) at step {step + 1}, micro-batch {micro}; the run "
                            f"stopped before updating the weights. Last good resume state: {where} in {out / CKPT_DIR}"
                        )
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients:
                        if cfg.grad_clip:
                            gn = accelerator.clip_grad_norm_(all_params, cfg.grad_clip)
                            grad_norm = float(gn) if gn is not None else None
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                step_loss += float(value) / cfg.grad_accum
                step_tokens += out_.n_tokens * world
                metrics = out_.metrics
            dt = time.perf_counter() - t0
            t_run += dt
            tok_run += step_tokens
            tokens_seen += step_tokens
            window_tok += step_tokens
            losses.append(step_loss)
            done = step + 1
            lr_now = scheduler.get_last_lr()[0]
            if done % cfg.log_every == 0 or done == cfg.max_steps:
                now = time.perf_counter()
                tps = window_tok / max(now - window_t, 1e-9)
                window_t, window_tok = now, 0
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_now:.2e}", tok_s=f"{tps:.0f}")
                if main:
                    _append_log(out, {"step": done, "loss": step_loss, "lr": lr_now, "grad_norm": grad_norm,
                                      "tokens": step_tokens, "tokens_seen": tokens_seen, "tokens_per_s": tps,
                                      **{k: v for k, v in metrics.items()}})
            bar.update(1)
            if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.max_steps:
                last_ckpt = _save_resume_state(accelerator, out, done, tokens_seen, cfg, step_loss)
            if on_step_end is not None:
                on_step_end(done, step_loss)
    finally:
        bar.close()

    # ---- final checkpoint in the evaluation layout
    if start_step < cfg.max_steps or not final_ready:
        _save_final(accelerator, module, unwrapped, objective, tokenizer, info, out, cfg, record, base_dir,
                    tokens_seen, losses or ([resumed_loss] if resumed_loss is not None else []), t_run, tok_run)
    accelerator.wait_for_everyone()
    tps_run = tok_run / t_run if t_run > 0 else None
    return AdaptResult(out, cfg.max_steps, losses[-1] if losses else resumed_loss, tps_run, losses,
                       resumed_from=start_step if resume_from is not None else None)


def _load_base(base: str):
    """``(backbone, tokenizer, info, preloaded, base_dir)`` in float32 on the CPU. A DSL
    checkpoint loads through ``load_dsl_checkpoint`` and hands its modules over as
    ``preloaded["dsl"]`` (the dsl objective continues them; others ignore them)."""
    from dslbench.models.dsl_checkpoint import is_dsl_checkpoint, load_dsl_checkpoint
    from dslbench.models.loading import load_model, resolve_checkpoint_dir

    base_dir = resolve_checkpoint_dir(base)
    if is_dsl_checkpoint(base_dir):
        backbone, dsl, tokenizer, info, _ = load_dsl_checkpoint(base_dir, dtype="float32", device="cpu")
        return backbone, tokenizer, info, {"dsl": dsl}, base_dir
    backbone, tokenizer, info = load_model(base_dir, dtype="float32", device="cpu")
    return backbone, tokenizer, info, {}, base_dir


def _append_log(out: Path, row: dict) -> None:
    fsio.append_text(out / LOG_FILE, json.dumps(row, sort_keys=True, default=float) + "\n")


def _trim_log(out: Path, step: int) -> None:
    """Keep the log rows of steps up to ``step`` (the state the run continues from): the steps
    after it are run, and logged, again. A torn last line (a kill mid-append) is dropped."""
    path = out / LOG_FILE
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    kept = []
    for line in text.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if line.endswith("\n") and isinstance(row, dict) and int(row.get("step", 0)) <= step:
            kept.append(line)
    if "".join(kept) != text:
        fsio.write_text_atomic("".join(kept), path)


def _save_resume_state(accelerator, out: Path, step: int, tokens_seen: int, cfg: AdaptConfig,
                       loss: float | None = None) -> Path:
    ckpts = out / CKPT_DIR
    name = f"step-{step:08d}"
    tmp = ckpts / f".tmp-{name}"
    final = ckpts / name
    if accelerator.is_main_process:
        ckpts.mkdir(parents=True, exist_ok=True)
        fsio.remove_tree(tmp)
    accelerator.wait_for_everyone()
    with writing(tmp):
        fsio.crash_point("write", tmp)
        accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        fsio.fix_mode(tmp)
        _write_json_atomic(tmp / TRAINER_STATE, {
            "step": step,
            "micro_batches_consumed": step * cfg.grad_accum,
            "data_position_rows": step * cfg.grad_accum * cfg.batch_size * accelerator.num_processes,
            "tokens_seen": tokens_seen,
            "seed": cfg.seed,
            "world_size": accelerator.num_processes,
            "loss": loss,
        })
        if final.exists():
            fsio.replace(final, ckpts / f"{TRASH}{name}")
        fsio.replace(tmp, final)
        fsio.write_text_atomic(name + "\n", ckpts / LATEST)
        keep = sorted(p for p in ckpts.glob("step-*") if p.is_dir())
        for old in keep[: -cfg.keep_checkpoints]:
            fsio.replace(old, ckpts / f"{TRASH}{old.name}")  # never half-deleted under its own name
        for trash in sorted(ckpts.glob(f"{TRASH}*")):
            fsio.remove_tree(trash)
    accelerator.wait_for_everyone()
    return final


def _full_modules(accelerator, module, unwrapped):
    """An unsharded module to save from (ZeRO-3 / FSDP gather the full state on the main process)."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type == DistributedType.FSDP or (
        accelerator.distributed_type == DistributedType.DEEPSPEED
        and accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    if not sharded:
        return unwrapped
    state = accelerator.get_state_dict(module)  # collective; full tensors on the main process
    if not accelerator.is_main_process:
        return None
    unwrapped.load_state_dict({k: v.to("cpu") for k, v in state.items()}, strict=False)
    return unwrapped


def _save_final(accelerator, module, unwrapped, objective, tokenizer, info, out: Path, cfg: AdaptConfig,
                record: dict, base_dir: Path, tokens_seen: int, losses: list[float], t_run: float, tok_run: int) -> None:
    full = _full_modules(accelerator, module, unwrapped)
    if not accelerator.is_main_process or full is None:
        return
    full = full.to("cpu")
    save_dtype = cfg.save_dtype
    if save_dtype == "auto":
        save_dtype = "bfloat16" if accelerator.mixed_precision == "bf16" else "float32"
    if save_dtype == "bfloat16":
        full.backbone.to(torch.bfloat16)
    recipe = {k: record[k] for k in ("lr", "warmup_steps", "weight_decay", "grad_clip", "batch_size", "grad_accum",
                                     "seq_len", "response_len", "prompt_format", "precision", "adam_betas", "adam_eps")}
    recipe["global_batch"] = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    recipe["mixed_precision"] = accelerator.mixed_precision
    recipe["schedule"] = "constant_with_warmup"
    frozen = sorted(n for n, p in full.named_parameters() if not p.requires_grad)
    summary = {
        "objective": cfg.objective,
        "base": cfg.base,
        "base_dir": str(base_dir),
        "data": cfg.data,
        "seed": cfg.seed,
        "data_seed": cfg.effective_data_seed,
        "steps": cfg.max_steps,
        "tokens_seen": tokens_seen,
        "final_loss": losses[-1] if losses else None,
        "tokens_per_s_this_session": (tok_run / t_run) if t_run > 0 else None,
        "recipe": recipe,
        "published_recipe": PUBLISHED_RECIPE,
        "objective_config": objective.config(),
        "frozen_parameters": frozen,
        "save_dtype": save_dtype,
        "world_size": accelerator.num_processes,
    }
    staging = out / STAGING
    fsio.remove_tree(staging)
    with writing(staging):
        objective.save_final(full, tokenizer, info, staging, summary)
    _write_json_atomic(staging / ADAPT_CONFIG_FILE, summary)
    _publish(staging, out)


def _publish(staging: Path, out: Path) -> None:
    """Move a complete checkpoint from ``staging`` into ``out``: config.json (the marker every
    loader needs) is removed first and put back last."""
    fsio.unlink(out / "config.json")
    names = sorted(p.name for p in staging.iterdir() if p.name != "config.json")
    run_files = {RUN_FILE, LOG_FILE, CKPT_DIR, "config.json", *names}
    for old in sorted(out.iterdir()):  # files of a previous final checkpoint the new one lacks
        if old.name not in run_files and not old.name.startswith("."):
            fsio.remove_tree(old)
    for name in names:
        dest = out / name
        if dest.is_dir() and not dest.is_symlink():
            fsio.remove_tree(dest)
        fsio.replace(staging / name, dest)
    fsio.replace(staging / "config.json", out / "config.json")
    fsio.remove_tree(staging)


__all__ = ["AdaptConfig", "AdaptResult", "AdaptError", "OutDirError", "NonFiniteLossError", "run_adapt",
           "latest_checkpoint", "step_generator", "ConstantWithWarmup", "PUBLISHED_RECIPE"]
