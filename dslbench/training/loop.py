"""The adaptation loop behind ``dslbench adapt``: accelerate, AdamW, warm-up-then-constant
schedule, gradient accumulation and clipping, atomic periodic checkpoints and exact resume.

The settings and errors are in :mod:`dslbench.training.config`; the output directory, its
atomic writes, resume states and the final checkpoint in :mod:`dslbench.training.checkpointing`.

Exactness: every random draw of an objective comes from a generator seeded by
``(seed, step, micro-step, process)``; the data order is a pure function of the seed and the
number of micro-batches consumed (:mod:`dslbench.training.data`). Resuming restores the model,
optimizer, scheduler and RNG states, so on CPU a run stopped at any checkpoint and resumed ends
with bitwise-identical weights to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

import torch

from dslbench import fsio
from dslbench.training.checkpointing import (
    ADAPT_CONFIG_FILE,
    CKPT_DIR,
    LOG_FILE,
    RUN_FILE,
    TRAINER_STATE,
    append_log,
    check_out_dir,
    check_resume_compatible,
    clean_leftovers,
    latest_checkpoint,
    read_json,
    save_final,
    save_resume_state,
    trim_log,
    write_json_atomic,
)
from dslbench.training.config import (
    PUBLISHED_RECIPE,
    AdaptConfig,
    AdaptError,
    AdaptResult,
    NonFiniteLossError,
    OutDirError,
    run_record,
)


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

    from dslbench.console import bar_file
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

    state = check_out_dir(out, cfg.resume)
    if main and state in ("run", "empty", "unstarted"):
        clean_leftovers(out)

    record = run_record(cfg, objective.config(), world)
    final_ready = (out / "config.json").is_file() and (out / ADAPT_CONFIG_FILE).is_file()
    if state == "run":
        changed = check_resume_compatible(read_json(out / RUN_FILE), record, out)
        if final_ready and read_json(out / ADAPT_CONFIG_FILE).get("steps") == cfg.max_steps:
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
        write_json_atomic(out / RUN_FILE, record)  # (on resume: the settings now in force)
        trim_log(out, int(read_json(resume_from / TRAINER_STATE)["step"]) if resume_from is not None else 0)
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
        tstate = read_json(resume_from / TRAINER_STATE)
        start_step, tokens_seen = int(tstate["step"]), int(tstate.get("tokens_seen", 0))
        resumed_loss = tstate.get("loss")
        if main:
            print(f"dslbench adapt: resuming {out} from step {start_step} ({resume_from.name})")
            append_log(out, {"event": "resume", "step": start_step, "checkpoint": resume_from.name})
    elif cfg.resume and main:
        print(f"dslbench adapt: nothing to resume in {out}; starting from step 0")

    if start_step > cfg.max_steps:
        raise AdaptError(f"--max-steps {cfg.max_steps} is below the resumed step {start_step} of {out}")

    # ---- train
    unwrapped = accelerator.unwrap_model(module)
    all_params = list(module.parameters())  # the full list: FSDP's clip needs the model's own parameters
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc=f"adapt {cfg.objective}",
               disable=not (cfg.progress and main), dynamic_ncols=True, file=bar_file())
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
                    append_log(out, {"step": done, "loss": step_loss, "lr": lr_now, "grad_norm": grad_norm,
                                      "tokens": step_tokens, "tokens_seen": tokens_seen, "tokens_per_s": tps,
                                      **{k: v for k, v in metrics.items()}})
            bar.update(1)
            if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.max_steps:
                last_ckpt = save_resume_state(accelerator, out, done, tokens_seen, cfg, step_loss)
            if on_step_end is not None:
                on_step_end(done, step_loss)
    finally:
        bar.close()

    # ---- final checkpoint in the evaluation layout
    if start_step < cfg.max_steps or not final_ready:
        save_final(accelerator, module, unwrapped, objective, tokenizer, info, out, cfg, record, base_dir,
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



__all__ = ["AdaptConfig", "AdaptResult", "AdaptError", "OutDirError", "NonFiniteLossError", "run_adapt",
           "latest_checkpoint", "step_generator", "ConstantWithWarmup", "PUBLISHED_RECIPE"]

