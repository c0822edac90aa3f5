"""What ``dslbench adapt`` writes into ``--out`` and reads back: the run record, the log, the
resume states and the final checkpoint.

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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dslbench import fsio
from dslbench.errors import writing
from dslbench.training.config import PUBLISHED_RECIPE, RESUME_KEYS, AdaptConfig, OutDirError

RUN_FILE = "adapt_run.json"
LOG_FILE = "adapt_log.jsonl"
ADAPT_CONFIG_FILE = "adapt_config.json"
CKPT_DIR = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
STAGING = ".final-staging"
TRASH = ".trash-"


def write_json_atomic(path: Path, data: Any) -> None:
    fsio.write_json_atomic(data, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))



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
    from dslbench.models.staging import recover_staged_checkpoint

    if out.is_dir():
        recover_staged_checkpoint(out / STAGING)  # a final checkpoint moved aside is put back first
    found = [*out.glob(f".{RUN_FILE}.tmp-*"), *out.glob(f".{LOG_FILE}.tmp-*"), *out.glob(f".{ADAPT_CONFIG_FILE}.tmp-*"),
             *out.glob(f".{STAGING}*"), out / STAGING]
    ckpts = out / CKPT_DIR
    found += [*ckpts.glob(".tmp-*"), *ckpts.glob(f"{TRASH}*"), *ckpts.glob(f".{LATEST}.tmp*")]
    return [p for p in dict.fromkeys(found) if p.exists() or p.is_symlink()]


def clean_leftovers(out: Path) -> None:
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


def check_out_dir(out: Path, resume: bool) -> str:
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
        where = f"a resume state at step {read_json(ck / TRAINER_STATE)['step']}" if ck else "no resume state yet"
        raise OutDirError(
            f"--out {out} already holds an adaptation run ({where}); pass --resume to continue it, "
            "or choose another --out"
        )
    return state


def check_resume_compatible(previous: dict, current: dict, out: Path) -> list[str]:
    diffs = [k for k in RESUME_KEYS if previous.get(k) != current.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: run has {previous.get(k)!r}, now {current.get(k)!r}" for k in diffs)
        raise OutDirError(f"--resume: {out} was started with different settings ({detail}); "
                          "use the same settings or another --out")
    return [k for k in current if k not in RESUME_KEYS and k not in ("max_steps", "save_every", "keep_checkpoints",
            "log_every", "device", "out") and previous.get(k) != current.get(k)]



def append_log(out: Path, row: dict) -> None:
    fsio.append_text(out / LOG_FILE, json.dumps(row, sort_keys=True, default=float) + "\n")


def trim_log(out: Path, step: int) -> None:
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


def _drop_shared_aliases(models, weights: list[dict], output_dir) -> None:
    from dslbench.models.saving import drop_shared_aliases

    for state in weights:
        drop_shared_aliases(state)


def save_resume_state(accelerator, out: Path, step: int, tokens_seen: int, cfg: AdaptConfig,
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
        # tied weights leave the state before accelerate's safetensors save (same file, no warning)
        handle = accelerator.register_save_state_pre_hook(_drop_shared_aliases)
        try:
            accelerator.save_state(str(tmp))
        finally:
            handle.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        fsio.fix_mode(tmp)
        write_json_atomic(tmp / TRAINER_STATE, {
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


def save_final(accelerator, module, unwrapped, objective, tokenizer, info, out: Path, cfg: AdaptConfig,
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
    write_json_atomic(staging / ADAPT_CONFIG_FILE, summary)
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

