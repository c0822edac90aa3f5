"""Load a checkpoint directory (or hub id) into (model, tokenizer, info).

The config is read from ``config.json`` directly and the family is chosen from its
``model_type``; remote code (``auto_map``) is never executed. Weights are read from
``model.safetensors`` or from the shards listed in ``model.safetensors.index.json`` with strict
key checking, so a checkpoint in an unexpected layout fails loudly instead of running with
randomly initialised tensors.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

# Files a checkpoint needs; hub downloads are restricted to these (no remote code, no .bin/.pt).
CHECKPOINT_FILE_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "vocab.json",  # Dream / Qwen2 ship a slow-format tokenizer beside (or instead of) tokenizer.json
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


class CheckpointFetchError(OSError):
    """A hub id could not be downloaded (offline, unknown repo, network error)."""


class CheckpointFormatError(ValueError):
    """A checkpoint directory is incomplete or its weights do not match its config."""


@dataclass(frozen=True)
class ModelInfo:
    """Token ids and facts about a loaded checkpoint that samplers and backends need."""

    family: str
    mask_id: int
    eos_id: int
    eot_id: int | None
    pad_id: int
    vocab_size: int
    has_chat_template: bool
    shift_logits: bool = False  # Dream-format: position i-1 predicts token i
    path: str = ""

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every id that ends a response: EOS first, then end-of-turn when distinct."""
        ids = [self.eos_id]
        if self.eot_id is not None and self.eot_id != self.eos_id:
            ids.append(self.eot_id)
        return tuple(ids)


# ---------------------------------------------------------------------------------------------
# Arguments


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; otherwise any torch device string ("cpu", "cuda:1")."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:0', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not valid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use 'auto' or 'cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """"auto" -> bfloat16 on CUDA, float32 elsewhere; also "float32", "bfloat16", "float16"."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    allowed = ["auto", *DTYPES]
    if not isinstance(dtype, str):
        raise ValueError(f"dtype={dtype!r} is not valid; allowed: {allowed}")
    name = _DTYPE_ALIASES.get(dtype, dtype)
    if name == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not valid; allowed: {allowed}")
    return DTYPES[name]


# ---------------------------------------------------------------------------------------------
# Locating a checkpoint


def _looks_like_path(pretrained: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else can only mean a local path.
    return pretrained.startswith((".", "/", "~")) or "\\" in pretrained or pretrained.count("/") > 1


def resolve_checkpoint_dir(pretrained: str | os.PathLike, cache_dir: str | None = None) -> Path:
    """A local directory as-is; anything else is treated as a hub id and fetched with snapshot_download."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        check_readable_dir(path)
        return path
    text = str(pretrained)
    if path.exists():
        raise CheckpointFormatError(f"{text!r} is a file; pass the checkpoint directory that holds config.json")
    _raise_if_unreachable(path)
    if _looks_like_path(text):
        raise FileNotFoundError(f"checkpoint directory {text!r} does not exist")
    return _download_from_hub(text, cache_dir)


def _raise_if_unreachable(path: Path) -> None:
    """A path that "does not exist" only because a parent folder is not searchable: say so."""
    try:
        os.stat(path)
    except PermissionError as err:
        raise PermissionError(errno.EACCES, "permission denied", str(path)) from err
    except OSError:
        return


def check_readable_dir(path: Path) -> None:
    if not os.access(path, os.R_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "permission denied (the checkpoint folder is not readable)", str(path))


def _download_from_hub(repo_id: str, cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo_id, allow_patterns=list(CHECKPOINT_FILE_PATTERNS), cache_dir=cache_dir)
        )
    except Exception as err:  # offline mode, unknown repo, network and auth errors all end here
        raise CheckpointFetchError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}). "
            "If you are offline or the id is wrong, pass a local checkpoint directory instead "
            "(one with config.json, model.safetensors or its shards, and tokenizer files)."
        ) from err


def read_json_file(path: Path, what: str = "JSON file") -> Any:
    """Parse ``path``; invalid JSON raises CheckpointFormatError naming the file, line and column
    (permission errors stay OSError, reported as such)."""
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{path}: not a valid {what} ({err.msg} at line {err.lineno}, column {err.colno})") from err
    except UnicodeDecodeError as err:
        raise CheckpointFormatError(f"{path}: not a valid {what} (not UTF-8 text: {err.reason})") from err


def read_config_json(directory: Path) -> dict[str, Any]:
    config_path = directory / "config.json"
    if not config_path.is_file():
        _raise_if_unreachable(config_path)
        raise CheckpointFormatError(f"{directory} has no config.json; it is not a checkpoint directory")
    raw = read_json_file(config_path, "config.json")
    if not isinstance(raw, dict):
        raise CheckpointFormatError(f"{config_path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def llada_config_from_dir(directory: Path):
    """The validated :class:`LLaDAConfig` of a LLaDA-format checkpoint directory."""
    from dslbench.models.llada_config import llada_config_from_dict

    try:
        return llada_config_from_dict(read_config_json(directory), directory / "config.json")
    except CheckpointFormatError:
        raise
    except ValueError as err:
        raise CheckpointFormatError(str(err)) from err


# ---------------------------------------------------------------------------------------------
# Weights


def checkpoint_weight_files(directory: Path) -> list[Path]:
    """The safetensors file(s) of a checkpoint: the sharded index wins over a single file."""
    index_path = directory / SAFETENSORS_INDEX_FILE
    if index_path.is_file():
        index = read_json_file(index_path, "safetensors index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointFormatError(f"{index_path}: no \"weight_map\" object of tensor name -> shard file")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [str(p.name) for p in files if not p.is_file()]
        if missing:
            raise CheckpointFormatError(f"{index_path} lists shard(s) that are missing: {missing[:5]}")
        return files
    single = directory / SAFETENSORS_FILE
    if single.is_file():
        return [single]
    _raise_if_unreachable(index_path)
    raise CheckpointFormatError(
        f"{directory} has neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX_FILE} "
        "(only safetensors checkpoints are supported)"
    )


def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


@contextmanager
def open_safetensors(file: Path, device: str | torch.device = "cpu") -> Iterator[Any]:
    """``safe_open`` whose errors name the file (a truncated or corrupt file raises
    CheckpointFormatError; permission errors stay OSError)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            yield f
    except SafetensorError as err:
        raise CheckpointFormatError(
            f"{file}: not a readable safetensors file ({err}); the file is truncated or corrupt, rewrite or re-download it"
        ) from err


def read_state_strict(
    expected: dict[str, torch.Size], files: list[Path], dtype: torch.dtype, device: torch.device,
    optional: frozenset[str] = frozenset(), what: str = "checkpoint weights",
) -> dict[str, torch.Tensor]:
    """Every tensor of ``files``, checked against ``expected`` names and shapes.

    Missing (unless ``optional``), unexpected or wrongly shaped tensors raise
    CheckpointFormatError naming them.
    """
    file_keys: dict[str, Path] = {}
    for file in files:
        with open_safetensors(file) as f:
            for key in f.keys():
                file_keys[key] = file
    missing = [k for k in expected if k not in file_keys and k not in optional]
    unexpected = [k for k in file_keys if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        raise CheckpointFormatError(f"{what} do not match the model built from config.json ({'; '.join(parts)})")

    state: dict[str, torch.Tensor] = {}
    for file in files:
        with open_safetensors(file, device) as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if tensor.shape != expected[key]:
                    raise CheckpointFormatError(
                        f"tensor {key} in {file.name} has shape {tuple(tensor.shape)}, "
                        f"config.json implies {tuple(expected[key])}"
                    )
                state[key] = tensor.to(dtype)
    return state


def load_weights_strict(
    model: torch.nn.Module, files: list[Path], dtype: torch.dtype, device: torch.device
) -> None:
    """Read every tensor from ``files`` into ``model`` (which may live on the meta device)."""
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    model.load_state_dict(read_state_strict(expected, files, dtype, device), strict=True, assign=True)


# ---------------------------------------------------------------------------------------------
# Families


def load_llada_dir(directory: Path, dtype: torch.dtype, device: torch.device):
    """(model, tokenizer, info) for a local LLaDA-format checkpoint directory."""
    from dslbench.models.llada import LLaDAModelLM

    config = llada_config_from_dir(directory)
    model = build_model_with_weights(LLaDAModelLM, config, checkpoint_weight_files(directory), dtype, device)
    tokenizer = load_tokenizer(directory, config)
    info = _llada_info(config, tokenizer, directory)
    return model, tokenizer, info


def load_llada_model(pretrained: str | os.PathLike, dtype: str = "auto", device: str = "auto"):
    """Only the network of a LLaDA-format checkpoint (no tokenizer files needed)."""
    from dslbench.models.llada import LLaDAModelLM

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    directory = resolve_checkpoint_dir(pretrained)
    config = llada_config_from_dir(directory)
    return build_model_with_weights(LLaDAModelLM, config, checkpoint_weight_files(directory), torch_dtype, dev)


def build_model_with_weights(model_class, config, files: list[Path], dtype: torch.dtype, device: torch.device):
    """Instantiate on the meta device (no wasted random init of billions of weights), then load."""
    with torch.device("meta"):
        model = model_class(config)
    load_weights_strict(model, files, dtype, device)
    model.config.dtype = dtype
    return model.eval()


def load_tokenizer(directory: Path, config=None):
    """The fast tokenizer of a checkpoint directory.

    Passing the already-parsed ``config`` stops AutoTokenizer from resolving config.json through
    AutoConfig, which does not know custom model_types such as "llada" (and would consult auto_map).
    """
    from transformers import AutoTokenizer

    path = directory / "tokenizer.json"
    if not path.is_file():
        _raise_if_unreachable(path)
        raise CheckpointFormatError(f"{directory} has no tokenizer.json (a fast tokenizer is required)")
    try:
        return AutoTokenizer.from_pretrained(str(directory), config=config)
    except OSError:
        raise
    except Exception as err:  # tokenizers raises plain Exceptions on a corrupt file
        raise CheckpointFormatError(f"{path} (or the tokenizer files beside it) could not be read: {err}") from err


def require_mask_token(tokenizer, mask_id: int, directory: Path) -> None:
    """A masked-diffusion checkpoint's tokenizer must hold its mask token: the id the model masks
    with (config.json's ``mask_token_id``) is a token of the tokenizer. A tokenizer without it
    would decode the mask as nothing (every output empty) or raise deep inside the sampler."""
    token = None
    if 0 <= int(mask_id) < len(tokenizer):
        try:
            token = tokenizer.convert_ids_to_tokens(int(mask_id))
        except (IndexError, KeyError, OverflowError, TypeError, ValueError):
            token = None
    if not token:
        named = f" (it names mask_token {tokenizer.mask_token!r})" if getattr(tokenizer, "mask_token", None) else ""
        raise CheckpointFormatError(
            f"{directory}: the tokenizer has no mask token: mask_token_id={mask_id} of config.json is not a token of "
            f"its tokenizer files{named}; a masked-diffusion checkpoint needs the tokenizer it was trained with"
        )


def _llada_info(config, tokenizer, directory: Path) -> ModelInfo:
    from dslbench.models.tokenizer import EOT_TOKEN, token_id

    if config.mask_token_id is None or config.eos_token_id is None:
        raise CheckpointFormatError(f"{directory}/config.json must set mask_token_id and eos_token_id")
    require_mask_token(tokenizer, config.mask_token_id, directory)
    pad_id = config.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.eos_token_id
    return ModelInfo(
        family="llada",
        mask_id=int(config.mask_token_id),
        eos_id=int(config.eos_token_id),
        eot_id=token_id(tokenizer, EOT_TOKEN),
        pad_id=int(pad_id),
        vocab_size=int(config.vocab_size),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        path=str(directory),
    )


# Family name -> "module:function" taking (directory, dtype, device) and returning
# (model, tokenizer, ModelInfo). Imported lazily so a family's dependencies load only when used;
# a new format is added by writing its loader and listing it here (or via register_family).
FAMILY_LOADERS: dict[str, str] = {
    "llada": "dslbench.models.loading:load_llada_dir",
    "dream": "dslbench.models.dream:load_dream_dir",
    "mdlm": "dslbench.models.mdlm_checkpoint:load_mdlm_dir",
}

# config.json model_type (lower-cased) -> family
MODEL_TYPE_FAMILIES: dict[str, str] = {
    "llada": "llada",
    "dream": "dream",
    "mdlm": "mdlm",
}


def register_family(family: str, loader: str | Callable, model_types: tuple[str, ...] = ()) -> None:
    """Add (or replace) a checkpoint family and the config.json model_types that select it."""
    FAMILY_LOADERS[family] = loader
    for model_type in model_types:
        MODEL_TYPE_FAMILIES[model_type.lower()] = family


def _family_loader(family: str) -> Callable:
    target = FAMILY_LOADERS[family]
    if callable(target):
        return target
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise NotImplementedError(
            f"{family}-format checkpoints are not supported by this installation ({module_name} is missing)"
        ) from err
    return getattr(module, func_name)


def detect_family(raw_config: dict[str, Any]) -> str:
    model_type = str(raw_config.get("model_type", "")).lower()
    if model_type not in MODEL_TYPE_FAMILIES:
        raise CheckpointFormatError(
            f"config.json model_type={raw_config.get('model_type')!r} is not a supported checkpoint "
            f"format; supported model_types: {sorted(MODEL_TYPE_FAMILIES)}"
        )
    return MODEL_TYPE_FAMILIES[model_type]


def load_model(
    pretrained: str | os.PathLike,
    family: str = "auto",
    dtype: str = "auto",
    device: str = "auto",
    cache_dir: str | None = None,
):
    """Load any supported checkpoint: ``family="auto"`` picks it from config.json's ``model_type``.

    Returns (model, tokenizer, ModelInfo); the model is in eval mode on ``device``.
    """
    if family != "auto" and family not in FAMILY_LOADERS:
        raise ValueError(f"family={family!r} is not valid; allowed: {['auto', *FAMILY_LOADERS]}")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    directory = resolve_checkpoint_dir(pretrained, cache_dir=cache_dir)
    raw = read_config_json(directory)
    detected = detect_family(raw)
    if family != "auto" and family != detected:
        raise CheckpointFormatError(
            f"{directory} holds a {detected}-format checkpoint (model_type={raw.get('model_type')!r}), "
            f"but family={family!r} was requested"
        )
    return _family_loader(detected)(directory, torch_dtype, dev)


def load_llada(pretrained: str | os.PathLike, dtype: str = "auto", device: str = "auto", cache_dir: str | None = None):
    """Load a LLaDA-format checkpoint (local directory or hub id): (model, tokenizer, ModelInfo)."""
    return load_model(pretrained, family="llada", dtype=dtype, device=device, cache_dir=cache_dir)
