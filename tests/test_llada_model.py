"""The native LLaDA module: numerics against transformers' Llama, checkpoint layout, loading errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dslbench.models.llada import LLaDAModelLM
from dslbench.models.llada_config import LLaDAConfig, llada_8b_config
from dslbench.models.loading import (
    CheckpointFetchError,
    CheckpointFormatError,
    load_llada,
    load_llada_model,
    load_model,
    resolve_dtype,
)
from dslbench.models.tiny import tiny_config

VOCAB = 97


def _config(**overrides) -> LLaDAConfig:
    base = dict(d_model=64, n_layers=2, n_heads=4, mlp_hidden_size=96, rope_theta=500000.0)
    return tiny_config(VOCAB, **{**base, **overrides})


def _model(config: LLaDAConfig, seed: int = 0) -> LLaDAModelLM:
    torch.manual_seed(seed)
    model = LLaDAModelLM(config).eval()
    # Non-trivial norm weights, so a swapped or skipped norm would show up in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model


# ---------------------------------------------------------------------------------------------
# (a) agreement with an independent implementation: transformers' Llama with bidirectional masks


def _llama_twin(model: LLaDAModelLM):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.config
    llama_cfg = LlamaConfig(
        vocab_size=cfg.padded_vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.mlp_hidden_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.effective_n_kv_heads,
        max_position_embeddings=cfg.max_sequence_length,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        attn_implementation="eager",  # explicit softmax(QK^T)V, not the SDPA path under test
    )
    llama = LlamaForCausalLM(llama_cfg).eval()
    src = {k: v for k, v in model.state_dict().items()}
    mapped = {
        "model.embed_tokens.weight": src["model.transformer.wte.weight"],
        "model.norm.weight": src["model.transformer.ln_f.weight"],
        "lm_head.weight": src["model.transformer.ff_out.weight"],
    }
    names = {
        "self_attn.q_proj": "q_proj",
        "self_attn.k_proj": "k_proj",
        "self_attn.v_proj": "v_proj",
        "self_attn.o_proj": "attn_out",
        "mlp.gate_proj": "ff_proj",
        "mlp.up_proj": "up_proj",
        "mlp.down_proj": "ff_out",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ff_norm",
    }
    for i in range(cfg.n_layers):
        for llama_name, llada_name in names.items():
            mapped[f"model.layers.{i}.{llama_name}.weight"] = src[f"model.transformer.blocks.{i}.{llada_name}.weight"]
    llama.load_state_dict(mapped, strict=True)
    return llama


def _bidirectional_mask(keep: torch.Tensor) -> torch.Tensor:
    """[B, T] keep-mask -> additive [B, 1, T, T] mask: every query sees every kept key (no causality)."""
    B, T = keep.shape
    mask = torch.zeros(B, 1, T, T)
    return mask.masked_fill(~keep.bool()[:, None, None, :], torch.finfo(torch.float32).min)


@pytest.mark.parametrize("n_kv_heads", [4, 2], ids=["mha", "gqa"])
def test_logits_match_bidirectional_llama(n_kv_heads):
    model = _model(_config(n_kv_heads=n_kv_heads))
    llama = _llama_twin(model)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 11), generator=gen)
    keep = torch.ones_like(ids)
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        ref = llama(input_ids=ids, attention_mask=_bidirectional_mask(keep)).logits
    assert ours.shape == ref.shape == (3, 11, VOCAB)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)

    # Bidirectional for real: changing the last token changes the logits at the first position.
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=changed).logits[:, 0], ours[:, 0])


@pytest.mark.parametrize("n_kv_heads", [4, 1], ids=["mha", "mqa"])
def test_left_padded_batch_matches_llama_and_unpadded_rows(n_kv_heads):
    model = _model(_config(n_kv_heads=n_kv_heads), seed=3)
    llama = _llama_twin(model)
    gen = torch.Generator().manual_seed(2)
    T, pad_id = 9, 0
    lengths = [9, 6, 3]
    ids = torch.full((3, T), pad_id)
    keep = torch.zeros(3, T, dtype=torch.long)
    rows = []
    for b, n in enumerate(lengths):
        row = torch.randint(1, VOCAB, (n,), generator=gen)
        rows.append(row)
        ids[b, T - n :] = row
        keep[b, T - n :] = 1
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=keep).logits
        ref = llama(input_ids=ids, attention_mask=_bidirectional_mask(keep)).logits
        assert torch.isfinite(ours).all()
        for b, n in enumerate(lengths):
            torch.testing.assert_close(ours[b, T - n :], ref[b, T - n :], atol=1e-5, rtol=1e-5)
            # RoPE is relative, so with pad keys masked a left-padded row equals the row alone.
            alone = model(input_ids=rows[b][None]).logits[0]
            torch.testing.assert_close(ours[b, T - n :], alone, atol=1e-5, rtol=1e-5)


def test_all_padding_row_stays_finite():
    model = _model(_config())
    ids = torch.randint(0, VOCAB, (2, 5))
    keep = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids, attention_mask=keep).logits).all()


# ---------------------------------------------------------------------------------------------
# (b) embeddings in, same logits out; other config switches


def test_inputs_embeds_path_equals_input_ids_path():
    model = _model(_config())
    ids = torch.randint(0, VOCAB, (2, 8))
    keep = torch.ones_like(ids)
    keep[1, :3] = 0
    with torch.no_grad():
        from_ids = model(input_ids=ids, attention_mask=keep).logits
        embeds = model.get_input_embeddings()(ids)
        from_embeds = model(inputs_embeds=embeds, attention_mask=keep).logits
    torch.testing.assert_close(from_ids, from_embeds, atol=0, rtol=0)
    assert model.get_output_embeddings() is model.model.transformer["ff_out"]
    with pytest.raises(ValueError, match="exactly one"):
        model(input_ids=ids, inputs_embeds=embeds)


def test_logits_to_keep_runs_the_head_on_the_last_positions_only():
    """``logits_to_keep=N`` (transformers' argument): the last N positions' logits, equal to the
    full forward's, with the output head fed N rows per sequence; 0 keeps every position."""
    model = _model(_config())
    ids = torch.randint(0, VOCAB, (2, 9))
    keep = torch.ones_like(ids)
    keep[1, :2] = 0
    head_rows = []
    hook = model.model.transformer["ff_out"].register_forward_hook(lambda m, i, o: head_rows.append(i[0].shape[1]))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=keep).logits
        tail = model(input_ids=ids, attention_mask=keep, logits_to_keep=4).logits
        everything = model(input_ids=ids, attention_mask=keep, logits_to_keep=0).logits
    hook.remove()
    assert head_rows == [9, 4, 9]
    torch.testing.assert_close(tail, full[:, -4:], atol=1e-6, rtol=0)
    torch.testing.assert_close(everything, full, atol=0, rtol=0)
    with pytest.raises(ValueError, match="logits_to_keep=10"):
        model(input_ids=ids, logits_to_keep=10)


def test_seam_logits_from_equals_the_sliced_canvas_and_counts_one_call():
    from dslbench.diffusion.denoiser import ModelDenoiser, logits_from

    model = _model(_config())
    den = ModelDenoiser(model, mask_id=VOCAB - 1, eos_id=1, eos_ids=(1,), vocab_size=VOCAB - 2)
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        embeds = den.embed(ids)
        full = den.forward(embeds, None)
        tail = logits_from(den, embeds, None, 6)
    assert full.shape == (2, 9, VOCAB - 2) and tail.shape == (2, 3, VOCAB - 2)
    torch.testing.assert_close(tail, full[:, 6:], atol=1e-6, rtol=0)
    assert den.nfe == 2

    class PlainSeam:  # a seam whose forward knows nothing of logits_from: sliced, same values
        nfe = 0

        def forward(self, inputs_embeds, attention_mask):
            return den.forward(inputs_embeds, attention_mask)

    with torch.no_grad():
        torch.testing.assert_close(logits_from(PlainSeam(), embeds, None, 6), full[:, 6:], atol=0, rtol=0)
    with pytest.raises(ValueError, match="logits_from=9"):
        den.forward(embeds, None, logits_from=9)


def test_scale_logits_input_emb_norm_and_weight_tying():
    ids = torch.randint(0, VOCAB, (1, 6))
    plain = _model(_config())
    scaled = _model(_config(scale_logits=True))
    with torch.no_grad():
        torch.testing.assert_close(scaled(input_ids=ids).logits, plain(input_ids=ids).logits / 8.0)

    normed = _model(_config(input_emb_norm=True))
    with torch.no_grad():
        embeds = plain.get_input_embeddings()(ids)
        torch.testing.assert_close(normed(inputs_embeds=embeds / 8.0).logits, plain(inputs_embeds=embeds).logits)

    tied = _model(_config(weight_tying=True))
    assert "model.transformer.ff_out.weight" not in tied.state_dict()
    assert tied.get_output_embeddings() is None
    # A tied head is the untied model with ff_out set to the embedding matrix.
    untied = _model(_config())
    state = tied.state_dict()
    state["model.transformer.ff_out.weight"] = state["model.transformer.wte.weight"]
    untied.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(tied(input_ids=ids).logits, untied(input_ids=ids).logits)

    biased = _model(_config(include_bias=True))
    assert "model.transformer.blocks.0.q_proj.bias" in biased.state_dict()
    assert "model.transformer.ff_out.bias" in biased.state_dict()


# ---------------------------------------------------------------------------------------------
# (c) the published checkpoint key layout, single file and sharded


def _published_layout(cfg: LLaDAConfig) -> dict[str, tuple[int, ...]]:
    """Expected tensor names and shapes, written out from the published naming scheme."""
    d, hidden, vocab = cfg.d_model, cfg.mlp_hidden_size, cfg.embedding_size
    kv = cfg.n_kv_heads * (cfg.d_model // cfg.n_heads)
    shapes = {
        "model.transformer.wte.weight": (vocab, d),
        "model.transformer.ln_f.weight": (d,),
        "model.transformer.ff_out.weight": (vocab, d),
    }
    per_block = {
        "q_proj": (d, d),
        "k_proj": (kv, d),
        "v_proj": (kv, d),
        "attn_out": (d, d),
        "ff_proj": (hidden, d),
        "up_proj": (hidden, d),
        "ff_out": (d, hidden),
        "attn_norm": (d,),
        "ff_norm": (d,),
    }
    for n in range(cfg.n_layers):
        for name, shape in per_block.items():
            shapes[f"model.transformer.blocks.{n}.{name}.weight"] = shape
    return shapes


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> Path:
    from dslbench.models.tokenizer import train_tokenizer

    words = ["alpha", "beta", "gamma", "delta", "summary", "text", "the", "a", "of", "model"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(6)) for i in range(200)]
    directory = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, vocab_size=300).save_pretrained(str(directory))
    return directory


def _write_checkpoint(
    directory: Path, cfg: LLaDAConfig, tensors: dict[str, torch.Tensor], tokenizer_dir: Path, shards: int = 1
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    raw = cfg.to_llada_dict()
    raw["auto_map"] = {"AutoModel": "modeling_llada.LLaDAModelLM"}  # published, must be ignored
    (directory / "config.json").write_text(json.dumps(raw))
    for f in tokenizer_dir.iterdir():
        (directory / f.name).write_bytes(f.read_bytes())
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"))
        return
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[s::shards]}
        save_file(part, str(directory / file))
        weight_map.update({k: file for k in part})
    index = {"metadata": {"total_size": sum(t.numel() * 4 for t in tensors.values())}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def _random_tensors(cfg: LLaDAConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: 0.1 * torch.randn(shape, generator=gen) for k, shape in _published_layout(cfg).items()}


def test_native_state_dict_has_exactly_the_published_keys():
    for cfg in (_config(), _config(n_kv_heads=2), llada_8b_config(n_layers=1, d_model=64, n_heads=4, n_kv_heads=4)):
        with torch.device("meta"):
            model = LLaDAModelLM(cfg)
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert ours == _published_layout(cfg)


@pytest.mark.parametrize("shards", [1, 2])
def test_published_layout_loads_strictly(tmp_path, tokenizer_files, shards):
    cfg = _config(n_kv_heads=2)
    tensors = _random_tensors(cfg)
    _write_checkpoint(tmp_path / "ckpt", cfg, tensors, tokenizer_files, shards=shards)
    model, tokenizer, info = load_llada(str(tmp_path / "ckpt"), dtype="float32", device="cpu")
    loaded = model.state_dict()
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value), key
    assert not model.training
    assert info.family == "llada" and info.mask_id == cfg.mask_token_id and info.eos_id == cfg.eos_token_id
    assert info.vocab_size == VOCAB
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, VOCAB)

    # Model-only loading needs no tokenizer, and bf16 loading converts the stored fp32 tensors.
    bf16 = load_llada_model(str(tmp_path / "ckpt"), dtype="bfloat16", device="cpu")
    assert bf16.model.transformer["wte"].weight.dtype == torch.bfloat16


def test_missing_and_unexpected_keys_are_named(tmp_path, tokenizer_files):
    cfg = _config()
    tensors = _random_tensors(cfg)
    dropped = "model.transformer.blocks.1.up_proj.weight"
    missing = {k: v for k, v in tensors.items() if k != dropped}
    _write_checkpoint(tmp_path / "missing", cfg, missing, tokenizer_files)
    with pytest.raises(CheckpointFormatError, match=r"missing keys: .*blocks\.1\.up_proj\.weight"):
        load_llada(str(tmp_path / "missing"), device="cpu")

    extra = dict(tensors)
    extra["model.transformer.blocks.0.att_proj.weight"] = torch.zeros(3, 3)
    _write_checkpoint(tmp_path / "extra", cfg, extra, tokenizer_files, shards=2)
    with pytest.raises(CheckpointFormatError, match=r"unexpected keys: .*blocks\.0\.att_proj\.weight"):
        load_llada(str(tmp_path / "extra"), device="cpu")

    wrong = dict(tensors)
    wrong["model.transformer.ln_f.weight"] = torch.ones(cfg.d_model + 1)
    _write_checkpoint(tmp_path / "shape", cfg, wrong, tokenizer_files)
    with pytest.raises(CheckpointFormatError, match=r"ln_f\.weight.*shape"):
        load_llada(str(tmp_path / "shape"), device="cpu")


def test_unknown_model_type_and_bad_arguments(tmp_path, tokenizer_files):
    cfg = _config()
    _write_checkpoint(tmp_path / "ckpt", cfg, _random_tensors(cfg), tokenizer_files)
    raw = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    raw["model_type"] = "mystery"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointFormatError, match="model_type='mystery'"):
        load_model(str(tmp_path / "other"), device="cpu")

    with pytest.raises(ValueError, match="dtype='float64'.*allowed"):
        load_llada(str(tmp_path / "ckpt"), dtype="float64", device="cpu")
    with pytest.raises(ValueError, match="device='gpu0'"):
        load_llada(str(tmp_path / "ckpt"), device="gpu0")
    with pytest.raises(ValueError, match="family='gpt2'"):
        load_model(str(tmp_path / "ckpt"), family="gpt2", device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_llada(str(tmp_path / "nope"), device="cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# (d) bf16


def test_bf16_forward_runs_and_tracks_fp32():
    model = _model(_config())
    ids = torch.randint(0, VOCAB, (2, 10))
    keep = torch.ones_like(ids)
    keep[0, :4] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=keep).logits
        model.to(torch.bfloat16)
        out = model(input_ids=ids, attention_mask=keep).logits
        from_fp32_embeds = model(inputs_embeds=torch.randn(2, 10, 64), attention_mask=keep).logits
    assert out.dtype == torch.bfloat16 and from_fp32_embeds.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


# ---------------------------------------------------------------------------------------------
# (e) config


def test_published_8b_config_values():
    cfg = llada_8b_config()
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden_size) == (4096, 32, 32, 32, 12288)
    assert (cfg.vocab_size, cfg.embedding_size, cfg.mask_token_id, cfg.eos_token_id) == (126464, 126464, 126336, 126081)
    assert cfg.rope_theta == 500000.0 and cfg.rms_norm_eps == 1e-5 and cfg.max_sequence_length == 4096
    assert cfg.weight_tying is False and cfg.use_cache is False and cfg.block_type == "llama"
    assert cfg.architectures == ["LLaDAModelLM"] and cfg.model_type == "llada"
    round_trip = LLaDAConfig.from_dict({**cfg.to_llada_dict(), "auto_map": {"AutoConfig": "x.y"}})
    assert round_trip.to_llada_dict() == cfg.to_llada_dict()
    assert not hasattr(round_trip, "auto_map")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alibi", True),
        ("rope", False),
        ("block_type", "sequential"),
        ("layer_norm_type", "default"),
        ("block_group_size", 2),
        ("attention_layer_norm", True),
        ("activation_type", "gelu"),
    ],
)
def test_unsupported_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"{field}={value!r} is not supported; allowed: "):
        llada_8b_config(**{field: value})


# ---------------------------------------------------------------------------------------------
# (f) hub ids


def test_hub_id_offline_gives_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)  # so the id cannot accidentally name a local folder
    with pytest.raises(CheckpointFetchError) as err:
        load_llada("GSAI-ML/LLaDA-8B-Instruct", device="cpu")
    message = str(err.value)
    assert "could not fetch 'GSAI-ML/LLaDA-8B-Instruct'" in message
    assert "local checkpoint directory" in message
