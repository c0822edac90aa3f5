"""Adaptation objectives and training data: hand-computed mdm loss, masks, the dsl step's
float32 / response-only / frozen-parameter contract, and the data layouts and their errors."""

from __future__ import annotations

import math

import pytest
import torch

from dslbench.training.data import (
    DataSpecError,
    TokenIds,
    collate_pairs,
    encode_pairs,
    pack_texts,
    parse_spec,
    read_records,
)
from dslbench.training.objectives import (
    AdaptModule,
    ObjectiveError,
    head_parameters,
    make_objective,
    mdm_corrupt,
    mdm_loss,
    place_response_values,
)
from tests.spies import capture_logits

IDS = TokenIds(bos=0, eos=1, eot=2, pad=6)


# ------------------------------------------------------------------------------------------------
# mdm


def test_mdm_loss_matches_hand_computation():
    # B=2 rows, T=4 positions, V=3. Row 0: prompt at 0, response at 1..3 (length 3), p=0.5,
    # masked at 1 and 3. Row 1: pad at 0, prompt at 1, response at 2..3 (length 2), p=0.25,
    # masked at 3.
    ids = torch.tensor([[0, 1, 2, 0], [6, 0, 2, 1]])
    response = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    masked = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 1]], dtype=torch.bool)
    p = torch.tensor([0.5, 0.25])
    logits = torch.zeros(2, 4, 3)
    logits[0, 1] = torch.tensor([0.0, math.log(3.0), 0.0])  # target 1: prob 3/5
    logits[0, 3] = torch.tensor([0.0, 0.0, 0.0])  # target 0: prob 1/3
    logits[1, 3] = torch.tensor([math.log(2.0), 0.0, math.log(5.0)])  # target 1: prob 1/8
    ce01, ce03, ce13 = -math.log(3 / 5), -math.log(1 / 3), -math.log(1 / 8)
    expected = ((ce01 + ce03) / (0.5 * 3) + ce13 / (0.25 * 2)) / 2
    got = mdm_loss(logits, ids, masked, p, response)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Without the 1/p weight: per-row mean over the response length only.
    plain = ((ce01 + ce03) / 3 + ce13 / 2) / 2
    assert mdm_loss(logits, ids, masked, p, response, weighting="none").item() == pytest.approx(plain, rel=1e-6)
    # Positions outside the mask never matter, whatever their logits.
    logits2 = logits.clone()
    logits2[0, 0] = 50.0
    logits2[1, 2] = -50.0
    assert mdm_loss(logits2, ids, masked, p, response).item() == pytest.approx(expected, rel=1e-6)


def test_mdm_loss_bf16_logits_are_upcast():
    ids = torch.tensor([[0, 1]])
    response = torch.tensor([[False, True]])
    logits = torch.randn(1, 2, 5).bfloat16()
    out = mdm_loss(logits, ids, response, torch.tensor([1.0]), response)
    assert out.dtype == torch.float32


def test_mdm_corrupt_never_masks_prompt_or_pad_and_follows_p():
    g = torch.Generator().manual_seed(0)
    B, T = 4000, 12
    ids = torch.randint(7, 50, (B, T))
    response = torch.zeros(B, T, dtype=torch.bool)
    response[:, 5:] = True  # 0..4 are prompt (or pad)
    noisy, masked, p = mdm_corrupt(ids, response, mask_id=5, generator=g)
    assert not masked[:, :5].any()
    assert torch.equal(noisy[:, :5], ids[:, :5])
    assert torch.equal(noisy[masked], torch.full_like(noisy[masked], 5))
    assert torch.equal(noisy[~masked], ids[~masked])
    assert float(p.min()) >= 1e-3 and float(p.max()) <= 1.0
    # The share of masked response tokens tracks each row's p (E = p).
    rate = masked[:, 5:].float().mean(dim=1)
    assert float((rate - p).mean().abs()) < 0.01
    # Same generator seed, same corruption.
    again = mdm_corrupt(ids, response, 5, torch.Generator().manual_seed(0))
    assert torch.equal(again[1], masked)


def test_unknown_objective_and_options_are_named():
    with pytest.raises(ObjectiveError, match="allowed: dsl, mdm"):
        make_objective("nope")
    with pytest.raises(ObjectiveError, match="--mdm-loss-weight"):
        make_objective("mdm", mdm_loss_weight="sqrt")
    with pytest.raises(ObjectiveError, match="--freeze-head 'maybe'.*allowed: auto, yes, no"):
        make_objective("dsl", freeze_head="maybe")
    with pytest.raises(ObjectiveError, match="--lognormal-per"):
        make_objective("dsl", lognormal_per="row")


# ------------------------------------------------------------------------------------------------
# dsl


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    from dslbench.models.loading import load_model

    return load_model(tiny_ckpt, dtype="float32", device="cpu")


def _module(tiny, name: str, **options):
    from dslbench.models.loading import load_model

    model, tokenizer, info = load_model(info_path(tiny), dtype="float32", device="cpu")
    objective = make_objective(name, **options)
    extras = objective.build(model, tokenizer, info)
    module = AdaptModule(model, extras, objective, info)
    objective.configure_trainable(module)
    return module.train(), tokenizer, info


def info_path(tiny):
    return tiny[2].path


def _batch(tokenizer, info):
    from dslbench.data.synth import make_summarization_examples

    rows = make_summarization_examples(3, seed=0, split="train")
    ids = TokenIds.from_tokenizer(tokenizer, info)
    pairs = encode_pairs([(r["document"], r["summary"]) for r in rows], tokenizer, ids)
    return collate_pairs(pairs, ids, seq_len=512, response_len=24)


@pytest.mark.parametrize("prompt", ["noised", "clean"])
def test_dsl_step_float32_response_only_and_frozen_parameters(tiny, prompt):
    module, tokenizer, info = _module(tiny, "dsl", noise_dim=16, dsl_prompt=prompt)
    dsl = module.extras["dsl"]
    batch = _batch(tokenizer, info)
    captured = {}
    original = module.logits

    def spy(**kw):
        out = original(**kw)
        out.retain_grad()
        captured["logits"], captured["inputs"] = out, kw["inputs_embeds"]
        return out

    module.logits = spy
    out = module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float32 and math.isfinite(out.loss.item())
    assert out.n_loss_tokens == int(batch.response_mask.sum())
    out.loss.backward()

    # Only response positions carry gradient into the logits (prompt and pad positions none).
    gl = captured["logits"].grad
    resp = batch.response_mask
    assert gl[~resp].abs().max().item() == 0.0
    assert (gl[resp].abs().sum(dim=-1) > 0).all()
    # Response inputs come from the converter; prompt inputs too by default (released: the
    # prompt is noised like the response), the clean token embeddings with dsl_prompt=clean.
    clean = module.embed(batch.input_ids)
    prompt_pos = batch.prompt_mask
    pad = ~batch.attention_mask.bool()
    assert pad.any() and prompt_pos.any()
    assert not torch.allclose(captured["inputs"][resp], clean[resp])
    assert torch.equal(captured["inputs"][pad], clean[pad])
    if prompt == "clean":
        assert torch.equal(captured["inputs"][prompt_pos], clean[prompt_pos])
    else:
        assert not torch.isclose(captured["inputs"][prompt_pos], clean[prompt_pos]).all(dim=-1).any()

    # Noise embedding and output head: frozen, no gradient. Converter and backbone: gradient.
    assert not dsl.noise_embed.weight.requires_grad and dsl.noise_embed.weight.grad is None
    head = head_parameters(module.backbone)
    assert head and all(not p.requires_grad and p.grad is None for p in head)
    for p in dsl.converter.parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0
    wte_grad = module.backbone.get_input_embeddings().weight.grad
    if prompt == "clean":
        assert wte_grad.abs().sum() > 0
    else:  # no gradient reaches the token embedding, but it is a zero tensor: AdamW still steps it
        assert wte_grad is not None and wte_grad.abs().max().item() == 0.0
    assert module.backbone.model.transformer.blocks[0].q_proj.weight.grad.abs().sum() > 0


def test_dsl_loss_equals_mean_response_cross_entropy(tiny):
    module, tokenizer, info = _module(tiny, "dsl", noise_dim=16)
    batch = _batch(tokenizer, info)
    captured = capture_logits(module)
    with torch.no_grad():
        out = module(batch.input_ids, batch.attention_mask, batch.response_mask, torch.Generator().manual_seed(3))
    logits, resp = captured["logits"].float(), batch.response_mask
    ce = torch.nn.functional.cross_entropy(logits[resp], batch.input_ids[resp], reduction="none")
    assert len(set(resp.sum(dim=1).tolist())) == 1  # rows share one response length here
    assert out.loss.item() == pytest.approx(ce.mean().item(), rel=1e-5)


def test_dsl_modules_init_from_backbone(tiny):
    module, _, info = _module(tiny, "dsl", noise_dim=16, beta_init=3.0)
    dsl = module.extras["dsl"]
    wte = module.backbone.get_input_embeddings().weight
    W = dsl.converter.backbone_embedding.weight
    assert torch.equal(W[:, : info.vocab_size], wte[: info.vocab_size].T)
    assert torch.equal(W[:, info.vocab_size], wte[info.mask_id])
    assert dsl.beta == pytest.approx(3.0)
    norms = dsl.noise_embed.weight.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_mdm_trains_the_head_unless_frozen(tiny):
    module, _, _ = _module(tiny, "mdm")
    assert all(p.requires_grad for p in head_parameters(module.backbone))
    module, _, _ = _module(tiny, "mdm", freeze_head="yes")
    assert not any(p.requires_grad for p in head_parameters(module.backbone))


def test_place_response_values():
    resp = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.bool)
    vals = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = place_response_values(vals, resp)
    assert out.tolist() == [[0, 0, 1, 2, 3], [0, 4, 5, 6, 0]]


# ------------------------------------------------------------------------------------------------
# data


def test_collate_pairs_left_pads_and_eos_fills_the_response():
    rows = [([0, 10, 11], [20, 21, 1]), ([0, 12], [22, 1])]
    b = collate_pairs(rows, IDS, seq_len=64, response_len=4)
    assert b.input_ids.tolist() == [[0, 10, 11, 20, 21, 1, 1], [6, 0, 12, 22, 1, 1, 1]]
    assert b.attention_mask.tolist() == [[1] * 7, [0, 1, 1, 1, 1, 1, 1]]
    assert b.response_mask.int().tolist() == [[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]]
    assert b.prompt_mask.int().tolist() == [[1, 1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0]]
    # No response_len: EOS fill up to the longest response of the batch.
    b = collate_pairs(rows, IDS, seq_len=64)
    assert b.response_mask.sum(dim=1).tolist() == [3, 3]
    assert b.input_ids[1, -3:].tolist() == [22, 1, 1]
    # Over-long prompts are cut in the middle to fit seq_len; the response is kept whole.
    long = [(list(range(100, 140)), [20, 1])]
    b = collate_pairs(long, IDS, seq_len=12, response_len=2)
    assert b.input_ids.shape == (1, 12)
    assert b.input_ids[0, :2].tolist() == [100, 101] and b.input_ids[0, -3:].tolist() == [139, 20, 1]


def test_encode_pairs_plain_matches_the_evaluation_prompt(tiny):
    _, tokenizer, info = tiny
    ids = TokenIds.from_tokenizer(tokenizer, info)
    ((p, r),) = encode_pairs([("Summarize the following text:\n\nabc.", "xyz.")], tokenizer, ids, "plain")
    assert p[0] == tokenizer.bos_token_id and r[-1] == info.eos_id
    assert tokenizer.decode(p[1:]) == "Summarize the following text:\n\nabc."
    ((pc, rc),) = encode_pairs([("hello", "xyz.")], tokenizer, ids, "chat")
    assert tokenizer.decode(pc) == tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True)
    assert rc[-1] == info.eot_id
    with pytest.raises(ValueError, match="--prompt-format 'xml'.*allowed: plain, chat"):
        encode_pairs([("a", "b")], tokenizer, ids, "xml")


def test_pack_texts_blocks(tiny):
    _, tokenizer, _ = tiny
    blocks = list(pack_texts(["one two three"] * 20, tokenizer, eos=1, seq_len=8))
    assert blocks and all(len(b) == 8 for b in blocks)
    assert 1 in sum(blocks, [])


def test_data_specs_and_errors_name_file_and_line(tmp_path):
    assert parse_spec("synth") == {"kind": "synth", "n": 5000}
    assert parse_spec("synth:12")["n"] == 12
    assert parse_spec("hf:HuggingFaceFW/fineweb-edu:sample-10BT") == {
        "kind": "hub", "name": "HuggingFaceFW/fineweb-edu", "config": "sample-10BT", "split": "train"}
    with pytest.raises(DataSpecError, match="synth:N must be a positive integer"):
        parse_spec("synth:many")
    with pytest.raises(DataSpecError, match="no such file; allowed: synth"):
        parse_spec(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "document": "d", "summary": "s"}\n\n{"prompt": "p", "response": "r"}\n')
    with pytest.raises(DataSpecError, match=r"bad\.jsonl, line 3: a prompt_response record"):
        read_records(bad)
    bad.write_text('{"id": "a", "document": "d", "summary": ""}\n')
    with pytest.raises(DataSpecError, match=r"bad\.jsonl, line 1: field 'summary' must be a non-empty string"):
        read_records(bad)
    bad.write_text('{"id": "a", "document": "d"\n')
    with pytest.raises(DataSpecError, match=r"bad\.jsonl, line 1: not valid JSON"):
        read_records(bad)
    bad.write_text('{"title": "x"}\n')
    with pytest.raises(DataSpecError, match=r"line 1: a record needs the fields"):
        read_records(bad)
    good = tmp_path / "xsum.jsonl"
    good.write_text('{"id": "1", "document": "d one", "summary": "s"}\n')
    from dslbench.data.prompts import XSUM_INSTRUCTION
    from dslbench.training.data import load_pairs_or_texts

    layout, items = load_pairs_or_texts(parse_spec(str(good)), 0)
    assert layout == "pairs" and items[0][0] == f"{XSUM_INSTRUCTION}\n\nd one"
