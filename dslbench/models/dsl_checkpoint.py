"""DSL checkpoints: a LLaDA-format backbone with the DSL modules stored next to its keys.

Layout written by :func:`save_dsl_checkpoint` (one directory, written atomically):

- ``config.json``: the LLaDA config (same as any LLaDA-format checkpoint);
- ``model-0000i-of-0000N.safetensors`` + ``model.safetensors.index.json`` (always indexed, also
  for one shard; :mod:`dslbench.models.saving`): the backbone keys (``model.transformer.*``)
  **and** the DSL keys of the published DSL-LLaDA release in the same shards: ``noise_embed.weight`` (V x d),
  ``converter.logit_bias`` (V+1), ``converter.backbone_embedding.weight`` (D x (V+1)),
  ``converter.backbone_embedding.bias`` (D), ``converter.beta`` (0-dim). The DSL tensors are
  stored in float32 whatever the backbone dtype (the converter runs in float32);
- tokenizer files;
- ``dsl_config.json``: ``objective`` ("dsl"), ``format_version``, ``vocab_size``, ``noise_dim``,
  ``d_model``, ``noise_seed``, ``mask_token_id``, ``beta_train`` (the *learned* converter beta at
  save time, which the sampler doubles at inference), ``beta_init``, and the sampler defaults
  (``snr_grid`` "sensitive", ``snr_min``/``snr_knots``/``snr_max``, ``topk``,
  ``beta_infer_factor``), plus any other keys the caller passes.

:func:`load_dsl_checkpoint` reads that layout and also the published release's checkpoints
(HF Trainer output of the released training script):

- no ``dsl_config.json``: everything is derived from the tensors (V and d from
  ``noise_embed.weight``, ``beta_train`` from ``converter.beta``) and ``layout`` is recorded as
  "published";
- ``log_snr_max`` (a frozen scalar the released script attaches to the model) and
  ``converter.embed.weight`` (an alias of the noise embedding, present when the shared module
  was saved twice) are accepted and not used (the alias must equal ``noise_embed.weight``);
- the optional LoRA on the output head, ``model.transformer.ff_out.{base.weight, lora_A,
  lora_B}`` (``lora_A`` d_in x r, ``lora_B`` r x d_out, output ``base(x) + x A B * alpha / r``)
  is merged into ``ff_out.weight`` as ``W + (alpha / r) (A B)^T`` (computed in float32).
  ``alpha`` is not stored in the release's checkpoints; the released LoRA class defaults it to
  128, which is used unless ``dsl_config.json`` sets ``ffout_lora_alpha``.

MDLM-format backbones (``model_type`` "mdlm", :mod:`dslbench.models.mdlm`; the DSL release
itself is LLaDA-only, so this layout is dslbench's): ``config.json`` and ``model.safetensors``
exactly as the released ``kuleshov-group/mdlm-owt`` (the ``backbone.*`` keys only, so the
released MDLM code and ``mdm_llada`` load the backbone unchanged), the five DSL tensors under
the names above in a side file ``dsl.safetensors`` (float32), tokenizer files and
``dsl_config.json`` (``d_model`` is the DiT's ``hidden_dim``). No head LoRA on this layout.

Gaps with respect to the public release, each refused with a clear error rather than loaded
wrongly: the "residual"/"highpass" converter variant (``converter.residual_proj.*``) and any
other unknown non-backbone key. Loading a hub id downloads ``dsl_config.json`` too when present.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from dslbench.models.loading import (
    CHECKPOINT_FILE_PATTERNS,
    CheckpointFetchError,
    CheckpointFormatError,
    checkpoint_weight_files,
    llada_config_from_dir,
    load_tokenizer,
    open_safetensors,
    read_config_json,
    read_json_file,
    resolve_device,
    resolve_dtype,
)

DSL_CONFIG_FILE = "dsl_config.json"
DSL_WEIGHTS_FILE = "dsl.safetensors"  # the DSL tensors next to an MDLM-format backbone
FORMAT_VERSION = 1
DSL_KEYS = (
    "noise_embed.weight",
    "converter.logit_bias",
    "converter.backbone_embedding.weight",
    "converter.backbone_embedding.bias",
    "converter.beta",
)
# Published extras that carry nothing the sampler needs.
IGNORED_KEYS = ("log_snr_max", "converter.embed.weight")
LORA_PREFIX = "model.transformer.ff_out."
LORA_KEYS = (LORA_PREFIX + "base.weight", LORA_PREFIX + "lora_A", LORA_PREFIX + "lora_B")
FFOUT_WEIGHT = "model.transformer.ff_out.weight"
DEFAULT_LORA_ALPHA = 128.0  # the released LoRALinear's default; not stored in its checkpoints

# Sampler defaults recorded in dsl_config.json (the published SDE settings).
SAMPLER_DEFAULTS: dict[str, Any] = {
    "snr_grid": "sensitive",
    "snr_min": 0.01,
    "snr_knots": [7.0, 74.0],
    "snr_max": 100.0,
    "topk": 512,
    "beta_infer_factor": 2.0,
    "noise_scale": "by_budget",
}


# ---------------------------------------------------------------------------------------------
# Saving


def save_dsl_checkpoint(model, dsl, tokenizer, out_dir: str | os.PathLike, dsl_config: dict | None = None) -> Path:
    """Write backbone + DSL modules + tokenizer + ``dsl_config.json`` into ``out_dir`` atomically.

    ``dsl_config`` may carry anything (training recipe, data, steps); the structural fields are
    filled from ``dsl`` and override what was passed, except that a passed ``beta_train`` that
    differs from the learned beta is kept as ``beta_init`` when no ``beta_init`` is given.
    """
    from dslbench.models.saving import llada_config_json, write_config_json, write_weights
    from dslbench.models.staging import staged_checkpoint_dir

    dsl_config = dict(dsl_config or {})
    objective = dsl_config.get("objective", "dsl")
    if objective != "dsl":
        raise ValueError(f"dsl_config objective={objective!r}; a DSL checkpoint has objective 'dsl'")
    mdlm = getattr(model.config, "model_type", "") == "mdlm"
    d_model = int(model.config.hidden_dim if mdlm else model.config.d_model)
    if dsl.d_model != d_model:
        raise ValueError(f"DSL modules map to width {dsl.d_model} but the model has d_model={d_model}")
    if dsl.vocab_size > int(getattr(model.config, "embedding_size", None) or model.config.vocab_size):
        raise ValueError(f"DSL vocabulary {dsl.vocab_size} is larger than the model's embedding table")

    backbone = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    extra = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in dsl.state_dict().items()}
    clash = sorted(set(backbone) & set(extra))
    if clash:
        raise ValueError(f"DSL keys collide with backbone keys: {clash}")
    if sorted(extra) != sorted(DSL_KEYS):
        raise ValueError(f"unexpected DSL module keys {sorted(extra)}; expected {list(DSL_KEYS)}")

    learned_beta = float(dsl.converter.beta.detach())
    config_out = {**dsl_config}
    if "beta_init" not in config_out:
        config_out["beta_init"] = float(dsl_config.get("beta_train", learned_beta))
    for key, value in SAMPLER_DEFAULTS.items():
        config_out.setdefault(key, value)
    config_out.update(
        objective="dsl",
        format_version=FORMAT_VERSION,
        vocab_size=int(dsl.vocab_size),
        noise_dim=int(dsl.noise_dim),
        d_model=d_model,
        noise_seed=int(getattr(dsl, "noise_seed", config_out.get("noise_seed", 0))),
        mask_token_id=int(model.config.mask_token_id),
        beta_train=learned_beta,
    )

    out = Path(out_dir).expanduser().resolve()
    with staged_checkpoint_dir(out) as tmp:
        if mdlm:  # the mdlm-owt layout untouched, the DSL tensors beside it
            from safetensors.torch import save_file

            from dslbench import fsio
            from dslbench.models.mdlm_checkpoint import WEIGHTS_FILE, mdlm_config_json

            write_config_json(mdlm_config_json(model), tmp / "config.json")
            for name, tensors in ((WEIGHTS_FILE, backbone), (DSL_WEIGHTS_FILE, extra)):
                with fsio.written_file(tmp / name):
                    save_file(tensors, str(tmp / name), metadata={"format": "pt"})
        else:
            write_config_json(llada_config_json(model), tmp / "config.json")
            write_weights({**backbone, **extra}, tmp)
        tokenizer.save_pretrained(str(tmp))
        write_config_json(config_out, tmp / DSL_CONFIG_FILE)
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def _resolve_dir(pretrained: str | os.PathLike) -> Path:
    from dslbench.models.loading import resolve_checkpoint_dir

    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path
    text = str(pretrained)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        return resolve_checkpoint_dir(pretrained)  # raises the usual errors
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=[*CHECKPOINT_FILE_PATTERNS, DSL_CONFIG_FILE]))
    except Exception as err:
        raise CheckpointFetchError(
            f"could not fetch {text!r} from the Hugging Face Hub ({type(err).__name__}: {err}); "
            "pass a local DSL checkpoint directory instead"
        ) from err


def is_dsl_checkpoint(pretrained: str | os.PathLike) -> bool:
    """True when a local directory holds DSL keys (``dsl_config.json`` or ``noise_embed.weight``)."""
    path = Path(pretrained).expanduser()
    if not path.is_dir():
        return False
    if (path / DSL_CONFIG_FILE).is_file() or (path / DSL_WEIGHTS_FILE).is_file():
        return True
    try:
        return "noise_embed.weight" in _file_keys(checkpoint_weight_files(path))
    except CheckpointFormatError:
        return False


def _file_keys(files: list[Path]) -> dict[str, Path]:
    keys: dict[str, Path] = {}
    for file in files:
        with open_safetensors(file) as f:
            for key in f.keys():
                keys[key] = file
    return keys


def _read_tensors(keys: dict[str, Path], wanted: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    by_file: dict[Path, list[str]] = {}
    for key in wanted:
        by_file.setdefault(keys[key], []).append(key)
    out = {}
    for file, names in by_file.items():
        with open_safetensors(file, device) as f:
            for name in names:
                out[name] = f.get_tensor(name)
    return out


def load_dsl_checkpoint(pretrained: str | os.PathLike, dtype: str = "auto", device: str = "auto"):
    """``(model, dsl, tokenizer, info, dsl_config)`` from a DSL checkpoint (ours or the release's).

    The backbone is loaded with strict key checking in ``dtype``; the DSL modules stay float32 on
    the same device. ``dsl_config`` is the stored file completed with the derived fields, plus
    ``layout`` ("dslbench" or "published") and, when a LoRA head was merged, ``ffout_lora``.
    """
    from dslbench.models.llada import LLaDAModelLM
    from dslbench.models.loading import _describe, _llada_info

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    directory = _resolve_dir(pretrained)
    raw = read_config_json(directory)
    model_type = str(raw.get("model_type", "")).lower()
    if model_type not in ("llada", "mdlm"):
        raise CheckpointFormatError(
            f"{directory}: DSL checkpoints are LLaDA-format (model_type 'llada') or MDLM-format (model_type 'mdlm'); "
            f"got model_type={raw.get('model_type')!r}"
        )
    stored_config = _stored_dsl_config(directory)
    if model_type == "mdlm":
        return _load_mdlm_dsl(directory, stored_config, torch_dtype, dev)
    config = llada_config_from_dir(directory)

    files = checkpoint_weight_files(directory)
    keys = _file_keys(files)
    missing_dsl = [k for k in DSL_KEYS if k not in keys]
    if missing_dsl:
        raise CheckpointFormatError(
            f"{directory} is not a DSL checkpoint: missing {', '.join(missing_dsl)} "
            "(a plain LLaDA checkpoint decodes with mdm_llada)"
        )
    unsupported = sorted(k for k in keys if k.startswith("converter.residual_proj."))
    if unsupported:
        raise CheckpointFormatError(
            f"{directory} uses the residual/highpass converter variant ({_describe(unsupported)}), "
            "which dslbench does not implement"
        )

    with torch.device("meta"):
        model = LLaDAModelLM(config)
    expected = {name: t.shape for name, t in model.state_dict().items()}
    has_lora = all(k in keys for k in LORA_KEYS)
    if any(k in keys for k in LORA_KEYS) and not has_lora:
        raise CheckpointFormatError(
            f"{directory} has an incomplete output-head LoRA: needs all of {', '.join(LORA_KEYS)}"
        )
    lora_extra = [k for k in keys if k.startswith(LORA_PREFIX + "base.") or k.startswith(LORA_PREFIX + "lora_")]
    special = set(DSL_KEYS) | set(IGNORED_KEYS) | set(lora_extra)
    backbone_keys = [k for k in keys if k not in special]
    wanted_backbone = set(expected) - ({FFOUT_WEIGHT} if has_lora else set())
    missing = sorted(wanted_backbone - set(backbone_keys))
    unexpected = sorted(set(backbone_keys) - set(expected))
    if has_lora and FFOUT_WEIGHT in keys:
        unexpected.append(FFOUT_WEIGHT + " (next to a LoRA base.weight)")
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        raise CheckpointFormatError(f"{directory}: weights do not match config.json ({'; '.join(parts)})")

    state = _read_tensors(keys, sorted(wanted_backbone), dev)
    for name, tensor in state.items():
        if tensor.shape != expected[name]:
            raise CheckpointFormatError(
                f"tensor {name} has shape {tuple(tensor.shape)}, config.json implies {tuple(expected[name])}"
            )
        state[name] = tensor.to(torch_dtype)

    lora_info = None
    if has_lora:
        lora = _read_tensors(keys, list(LORA_KEYS), dev)
        base, a, b = (lora[k].float() for k in LORA_KEYS)
        if base.shape != expected[FFOUT_WEIGHT]:
            raise CheckpointFormatError(
                f"{LORA_KEYS[0]} has shape {tuple(base.shape)}, expected {tuple(expected[FFOUT_WEIGHT])}"
            )
        d_out, d_in = base.shape
        rank = a.shape[1]
        if a.shape != (d_in, rank) or b.shape != (rank, d_out):
            raise CheckpointFormatError(
                f"LoRA shapes lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit ff_out {tuple(base.shape)}"
            )
        alpha = float(stored_config.get("ffout_lora_alpha", DEFAULT_LORA_ALPHA))
        scale = alpha / rank
        state[FFOUT_WEIGHT] = (base + scale * (a @ b).T).to(torch_dtype)
        lora_info = {"rank": int(rank), "alpha": alpha, "scale": scale, "merged": True}
        if any(k.startswith(LORA_PREFIX + "base.bias") for k in keys):
            raise CheckpointFormatError("a LoRA output head with a bias is not supported (LLaDA's ff_out has none)")

    model.load_state_dict(state, strict=True, assign=True)
    model.config.dtype = torch_dtype
    model.eval()

    dsl_state = {k: v.float() for k, v in _read_tensors(keys, list(DSL_KEYS), torch.device("cpu")).items()}
    if "converter.embed.weight" in keys:
        alias = _read_tensors(keys, ["converter.embed.weight"], torch.device("cpu"))["converter.embed.weight"].float()
        if alias.shape != dsl_state["noise_embed.weight"].shape or not torch.equal(alias, dsl_state["noise_embed.weight"]):
            raise CheckpointFormatError("converter.embed.weight differs from noise_embed.weight")
    dsl, info_config = _dsl_modules(dsl_state, stored_config, int(config.d_model), int(config.vocab_size),
                                    int(config.mask_token_id), dev)
    if "log_snr_max" in keys:
        value = _read_tensors(keys, ["log_snr_max"], torch.device("cpu"))["log_snr_max"]
        info_config["log_snr_max"] = float(value.float().reshape(-1)[0])
    if lora_info is not None:
        info_config["ffout_lora"] = lora_info

    tokenizer = load_tokenizer(directory, config)
    info = _llada_info(config, tokenizer, directory)
    return model, dsl, tokenizer, info, info_config


def _stored_dsl_config(directory: Path) -> dict[str, Any]:
    """``dsl_config.json`` (empty when absent: a published checkpoint)."""
    if not (directory / DSL_CONFIG_FILE).is_file():
        return {}
    stored_config = read_json_file(directory / DSL_CONFIG_FILE, DSL_CONFIG_FILE)
    if not isinstance(stored_config, dict):
        raise CheckpointFormatError(f"{directory / DSL_CONFIG_FILE}: expected a JSON object")
    if stored_config.get("objective", "dsl") != "dsl":
        raise CheckpointFormatError(
            f"{directory}/{DSL_CONFIG_FILE} says objective={stored_config.get('objective')!r}, not 'dsl'"
        )
    return stored_config


def _load_mdlm_dsl(directory: Path, stored_config: dict[str, Any], dtype: torch.dtype, dev: torch.device):
    """An MDLM-format backbone (loaded as any MDLM checkpoint) plus ``dsl.safetensors``."""
    from dslbench.models.mdlm_checkpoint import load_mdlm_dir

    side = directory / DSL_WEIGHTS_FILE
    if not side.is_file():
        raise CheckpointFormatError(f"{directory} is an MDLM-format checkpoint without {DSL_WEIGHTS_FILE}; "
                                    "not a DSL checkpoint (a plain MDLM checkpoint decodes with mdm_llada)")
    keys = _file_keys([side])
    missing = [k for k in DSL_KEYS if k not in keys]
    unexpected = sorted(set(keys) - set(DSL_KEYS))
    if missing or unexpected:
        raise CheckpointFormatError(f"{side}: expected exactly the DSL tensors {', '.join(DSL_KEYS)} "
                                    f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'})")
    model, tokenizer, info = load_mdlm_dir(directory, dtype, dev)
    dsl_state = {k: v.float() for k, v in _read_tensors(keys, list(DSL_KEYS), torch.device("cpu")).items()}
    dsl, info_config = _dsl_modules(dsl_state, stored_config, int(model.config.hidden_dim),
                                    int(model.config.vocab_size), int(info.mask_id), dev)
    return model, dsl, tokenizer, info, info_config


def _dsl_modules(dsl_state: dict[str, torch.Tensor], stored_config: dict[str, Any], width: int, vocab_size: int,
                 mask_id: int, dev: torch.device):
    """The checked :class:`DSLModules` of ``dsl_state`` and the completed ``dsl_config``."""
    from dslbench.diffusion.dsl import DSLModules

    vocab, noise_dim = dsl_state["noise_embed.weight"].shape
    d_model = dsl_state["converter.backbone_embedding.weight"].shape[0]
    if d_model != width:
        raise CheckpointFormatError(
            f"converter.backbone_embedding.weight maps to width {d_model}, the model has d_model={width}"
        )
    if dsl_state["converter.backbone_embedding.weight"].shape[1] != vocab + 1 or dsl_state["converter.logit_bias"].shape != (vocab + 1,):
        raise CheckpointFormatError("converter tensors do not have V + 1 slots for the noise embedding's V rows")
    if vocab < vocab_size:
        raise CheckpointFormatError(
            f"noise_embed.weight has {vocab} rows, fewer than the tokenizer vocabulary ({vocab_size})"
        )
    norms = dsl_state["noise_embed.weight"].norm(dim=-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-2):
        raise CheckpointFormatError("noise_embed.weight rows are not unit-norm; not a DSL noise embedding")

    with torch.device("meta"):
        dsl = DSLModules(vocab, noise_dim, d_model, noise_seed=int(stored_config.get("noise_seed", 0)))
    dsl.load_state_dict(dsl_state, strict=True, assign=True)
    dsl.noise_embed.weight.requires_grad_(False)
    dsl = dsl.to(dev).eval()

    learned_beta = float(dsl_state["converter.beta"])
    info_config = {**SAMPLER_DEFAULTS, **stored_config}
    stored_beta = stored_config.get("beta_train")
    if stored_beta is not None and not math.isclose(float(stored_beta), learned_beta, rel_tol=1e-5, abs_tol=1e-6):
        info_config["beta_train_config"] = float(stored_beta)  # the weights win
    info_config.update(
        objective="dsl",
        vocab_size=int(vocab),
        noise_dim=int(noise_dim),
        d_model=int(d_model),
        beta_train=learned_beta,
        mask_token_id=int(mask_id),
        layout="dslbench" if stored_config else "published",
    )
    return dsl, info_config
