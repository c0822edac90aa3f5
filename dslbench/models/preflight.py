"""Check a local checkpoint folder without loading its weights: what a run needs before its
first evaluation (``dslbench leaderboard`` checks every model of a config this way, so a missing
or truncated checkpoint of the last model is found in seconds, not after hours of cells).

Checked: the folder exists; ``config.json`` parses; ``model.safetensors.index.json`` (when
present) names shards that exist; every safetensors file is complete (its 8-byte header length,
its JSON header, and a file at least as long as the largest tensor end offset: nothing but the
header is read); the tokenizer loads and, for masked-diffusion formats (LLaDA, Dream, DSL,
soft-masking), holds the mask token the model masks with. DiffusionGemma (uniform-state noise)
has no mask token: its tokenizer must load and its config must be a DiffusionGemma config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dslbench.errors import describe_os_error
from dslbench.models.loading import CheckpointFormatError, checkpoint_weight_files, read_config_json

_HEADER_LIMIT = 100 << 20  # safetensors refuses headers above 100 MB


def safetensors_problem(file: Path) -> str | None:
    """Why ``file`` is not a complete safetensors file (None when it is), from its header only."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{file}: truncated safetensors file ({size} bytes, not even its 8-byte header length)"
        n = int.from_bytes(head, "little")
        if n > _HEADER_LIMIT:
            return f"{file}: not a safetensors file (header length {n} bytes); rewrite or re-download it"
        if size < 8 + n:
            return f"{file}: truncated safetensors file ({size} bytes, its header alone needs {8 + n}); rewrite or re-download it"
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{file}: not a safetensors file (its header is not JSON); rewrite or re-download it"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return f"{file}: not a safetensors file (a header entry has no data_offsets); rewrite or re-download it"
    if size < 8 + n + end:
        return (f"{file}: truncated safetensors file ({size} bytes, its tensors end at byte {8 + n + end}); "
                "rewrite or re-download it")
    return None


def _tokenizer_problem(directory: Path, raw: dict[str, Any], backend: str) -> None:
    """Load the tokenizer the backend will load (raising CheckpointFormatError / OSError)."""
    from dslbench.models.loading import _llada_info, detect_family, llada_config_from_dir, load_tokenizer

    if backend == "diffusiongemma":
        from dslbench.models.diffusiongemma import check_diffusiongemma_config

        check_diffusiongemma_config(raw, str(directory))
        load_tokenizer(directory, config=None)
        return
    family = detect_family(raw)
    if family == "llada":
        config = llada_config_from_dir(directory)
        _llada_info(config, load_tokenizer(directory, config), directory)
    elif family == "dream":
        from dslbench.models.dream import _dream_info, load_dream_tokenizer, validated_dream_config

        config = validated_dream_config(raw, directory / "config.json")
        _dream_info(config, load_dream_tokenizer(directory, config), directory)
    elif family == "mdlm":  # the config; a folder without tokenizer.json gets GPT-2's at load time
        from dslbench.models.mdlm_checkpoint import mdlm_config_from_dir, with_mask_token

        config = mdlm_config_from_dir(directory)
        if (directory / "tokenizer.json").is_file():
            with_mask_token(load_tokenizer(directory, config), config.vocab_size, directory)


def checkpoint_problems(directory: str | os.PathLike, backend: str) -> list[str]:
    """Every problem found in the local checkpoint folder ``directory`` for ``backend``
    (an empty list when it looks complete); the weights themselves are never loaded."""
    directory = Path(directory).expanduser()
    if not directory.exists():
        return [f"checkpoint folder {directory} does not exist"]
    if not directory.is_dir():
        return [f"{directory} is a file; pass the checkpoint directory that holds config.json"]
    problems: list[str] = []

    def attempt(fn, *args):
        try:
            return fn(*args)
        except CheckpointFormatError as err:
            problems.append(str(err))
        except OSError as err:
            problems.append(describe_os_error(err))
        except (ValueError, ImportError) as err:  # a config a family refuses, transformers too old
            problems.append(f"{directory}: {err}")
        return None

    raw = attempt(read_config_json, directory)
    files = attempt(checkpoint_weight_files, directory) or []
    for file in files:
        problem = attempt(safetensors_problem, file)
        if problem:
            problems.append(problem)
    if raw is not None:
        attempt(_tokenizer_problem, directory, raw, backend)
    if backend == "dsl_llada" and files and not problems:
        from dslbench.models.dsl_checkpoint import is_dsl_checkpoint

        if not is_dsl_checkpoint(directory):
            problems.append(f"{directory} holds no DSL modules (dsl_config.json, noise_embed.weight): "
                            "dsl_llada needs a DSL checkpoint (a plain LLaDA checkpoint decodes with mdm_llada)")
    return problems


__all__ = ["checkpoint_problems", "safetensors_problem"]
