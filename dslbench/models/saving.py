"""The weights and config.json of every checkpoint this package writes, in the layout the
released code reads.

Weights are always sharded the way the Hugging Face Trainer saves them, even when one shard
holds everything: ``model-00001-of-0000N.safetensors`` plus ``model.safetensors.index.json``
(``{"metadata": {"total_size"}, "weight_map": {key: shard}}``). The released DSL-LLaDA
evaluation attaches the converter by globbing ``model-*.safetensors``: a lone
``model.safetensors`` is not found there and the converter silently stays random. Key names and
shapes are the published ones (``model.transformer.*`` plus the DSL keys at top level).

A LLaDA-format ``config.json`` carries an ``auto_map`` naming the published remote code in its
hub repository (``GSAI-ML/LLaDA-8B-Instruct--modeling_llada.LLaDAModelLM``), which is what
``AutoModel.from_pretrained(DIR, trust_remote_code=True)`` in the released scripts needs; the
code is fetched from (or found in the cache of) that repository, not shipped here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dslbench import fsio
from dslbench.errors import writing
from dslbench.models.loading import SAFETENSORS_INDEX_FILE

SHARD_PATTERN = "model{suffix}.safetensors"
MAX_SHARD_SIZE = "5GB"  # the transformers default
LLADA_CODE_REPO = "GSAI-ML/LLaDA-8B-Instruct"
LLADA_AUTO_MAP = {
    "AutoConfig": f"{LLADA_CODE_REPO}--configuration_llada.LLaDAConfig",
    "AutoModel": f"{LLADA_CODE_REPO}--modeling_llada.LLaDAModelLM",
    "AutoModelForCausalLM": f"{LLADA_CODE_REPO}--modeling_llada.LLaDAModelLM",
}


def write_weights(state: dict[str, torch.Tensor], directory: str | os.PathLike,
                  max_shard_size: int | str = MAX_SHARD_SIZE, metadata: dict[str, str] | None = None) -> list[Path]:
    """Write ``state`` as safetensors shards + index into ``directory``; returns the shard paths."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    directory = Path(directory)
    split = split_torch_state_dict_into_shards(state, filename_pattern=SHARD_PATTERN, max_shard_size=max_shard_size)
    names = {name: name for name in split.filename_to_tensors}
    if not split.is_sharded:  # one shard: still named and indexed as a shard
        names = {name: SHARD_PATTERN.format(suffix="-00001-of-00001") for name in split.filename_to_tensors}
    paths = []
    for name, keys in split.filename_to_tensors.items():
        path = directory / names[name]
        tensors = {k: state[k].detach().to("cpu").contiguous() for k in keys}
        with writing(path), fsio.written_file(path):
            save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})
        paths.append(path)
    index = {"metadata": dict(split.metadata),
             "weight_map": {k: names[f] for k, f in sorted(split.tensor_to_filename.items())}}
    fsio.write_json_atomic(index, directory / SAFETENSORS_INDEX_FILE)
    return paths


def write_config_json(config: dict[str, Any], path: str | os.PathLike) -> Path:
    return fsio.write_json_atomic(config, path)


def llada_config_json(model) -> dict[str, Any]:
    """config.json of a LLaDA-format model: the published field set, its dtype and auto_map."""
    config = model.config.to_llada_dict()
    config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    config["auto_map"] = dict(LLADA_AUTO_MAP)
    return dict(sorted(config.items()))


def read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory (sharded or single file), on the CPU."""
    from safetensors.torch import load_file

    from dslbench.models.loading import checkpoint_weight_files

    state: dict[str, torch.Tensor] = {}
    for file in checkpoint_weight_files(Path(directory)):
        state.update(load_file(str(file)))
    return state


def drop_shared_aliases(state: dict[str, torch.Tensor]) -> list[str]:
    """Remove from ``state``, in place, every key whose tensor shares storage with an earlier key
    (tied weights: DiffusionGemma's encoder and decoder share their layers, its head the embedding);
    returns the removed keys. It keeps the first key of each group, as accelerate's own clean-up
    before a safetensors save does, so the file written is the same, without accelerate's "Removed
    shared tensor {...}" warning (a list of every tied name, read as a fault); safetensors'
    ``load_model`` (what accelerate's ``load_state`` calls) ties them again on load."""
    from accelerate.utils import id_tensor_storage

    seen: set = set()
    removed = []
    for key, tensor in list(state.items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        storage = id_tensor_storage(tensor)
        if storage in seen:
            removed.append(key)
            del state[key]
        seen.add(storage)
    return removed


def weight_map(directory: str | os.PathLike) -> dict[str, str]:
    with (Path(directory) / SAFETENSORS_INDEX_FILE).open(encoding="utf-8") as f:
        return json.load(f)["weight_map"]


__all__ = ["write_weights", "write_config_json", "llada_config_json", "read_weights", "LLADA_AUTO_MAP",
           "MAX_SHARD_SIZE", "drop_shared_aliases"]
