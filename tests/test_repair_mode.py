"""Selective corruption and the token-space repair mode, against oracle / identity denoisers."""

from __future__ import annotations

import pytest
import torch

from dslbench.diffusion.corruption import (
    corrupt,
    corruption_count,
    document_seed,
    nearest_neighbours,
    random_replacement_ids,
    unit_rows,
)
from dslbench.diffusion.oracle import IdentityDenoiser, OracleDenoiser
from dslbench.diffusion.repair import argmax_repair, repair_protocol

LLADA_SPECIALS = {126080, 126081, 126336, 126346, 126347, 126348}  # BOS, EOS, mask, headers, EoT


@pytest.mark.parametrize(
    "n, rate, expected",
    [
        (7, 0.1, 1),  # int(0.7) = 0 -> at least one
        (25, 0.3, 7),  # int(7.5); round() gave 8
        (3, 0.1, 1),
        (15, 0.1, 1),  # int(1.5); round() gave 2
        (19, 0.1, 1),  # int(1.9); round() gave 2
        (10, 0.3, 3),  # 10 * 0.3 = 3.0000000000000004 -> 3
        (73, 0.1, 7),
        (75, 0.5, 37),
        (80, 0.3, 24),
        (1, 0.5, 1),
        (0, 0.1, 0),  # an empty passage has nothing to corrupt
    ],
)
def test_corruption_count_is_max_1_int_n_r(n, rate, expected):
    assert corruption_count(n, rate) == expected
    ids = torch.arange(200, 200 + n)
    assert len(corrupt(ids, rate, "random", seed=1, random_ids=torch.arange(100, 1024))[1]) == expected


def test_random_replacements_come_from_the_released_id_range():
    ids = random_replacement_ids(126464, LLADA_SPECIALS)  # LLaDA's vocabulary: exactly [100, 126000)
    assert ids[0] == 100 and ids[-1] == 125999 and len(ids) == 125900
    tiny = random_replacement_ids(1024, {0, 1, 2, 3, 4, 5, 6, 500})  # clipped; a special id inside is left out
    assert tiny[0] == 100 and tiny[-1] == 1023 and 500 not in tiny.tolist() and len(tiny) == 923
    with pytest.raises(ValueError, match=r"ids in \[100, 126000\)"):
        random_replacement_ids(64)
    # every position may be corrupted (special ones too, as released); replacements differ from the original
    passage = torch.tensor([0, 150, 151, 152, 153, 154, 155, 156, 157, 158])
    out, pos = corrupt(passage, 1.0, "random", seed=4, random_ids=torch.arange(150, 153))
    assert pos.tolist() == list(range(10))
    assert torch.isin(out, torch.arange(150, 153)).all() and (out != passage).all()
    out, pos = corrupt(passage, 0.3, "random", seed=5, random_ids=tiny)
    keep = torch.ones(10, dtype=torch.bool)
    keep[pos] = False
    assert len(pos) == 3 and torch.equal(out[keep], passage[keep]) and (out[pos] != passage[pos]).all()
    assert ((out[pos] >= 100) & (out[pos] < 1024)).all()


def test_corruption_is_deterministic_per_seed():
    ids = torch.arange(300, 340)
    a = corrupt(ids, 0.3, "random", seed=11, random_ids=torch.arange(100, 1024))
    b = corrupt(ids.clone(), 0.3, "random", seed=11, random_ids=torch.arange(100, 1024))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = corrupt(ids, 0.3, "random", seed=12, random_ids=torch.arange(100, 1024))
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_document_seed_is_stable_and_text_dependent():
    assert document_seed("a passage", 1234) == document_seed("a passage", 1234)
    assert document_seed("a passage", 1234) != document_seed("a passage.", 1234)
    assert document_seed("a passage", 1234) != document_seed("a passage", 1235)
    assert document_seed("x", 0) == 8088837398780876553  # fixed across Python processes (no hash salt)


def test_semantic_neighbours_are_the_five_nearest_rows_self_excluded_specials_included():
    # Embeddings on a circle: the neighbours of token t by cosine are the ids at the nearest angles.
    angles = torch.arange(16, dtype=torch.float) * (2 * torch.pi / 16)
    emb = torch.stack([angles.cos(), angles.sin()], dim=-1) * torch.arange(1, 17)[:, None]  # norms differ: cosine
    unit = unit_rows(emb)
    assert sorted(nearest_neighbours(unit, torch.tensor([7]), k=4)[0].tolist()) == [5, 6, 8, 9]
    # id 0 plays a special token, id 15 an unused row: both are candidates, as released
    assert sorted(nearest_neighbours(unit, torch.tensor([1]), k=4)[0].tolist()) == [0, 2, 3, 15]
    ids = torch.arange(0, 16)
    out, pos = corrupt(ids, 1.0, "semantic", seed=3, unit_embeddings=unit, k=2)
    assert len(pos) == 16
    for p in pos.tolist():
        t = ids[p].item()
        assert out[p].item() in {(t - 1) % 16, (t + 1) % 16}  # the two nearest by angle, never t itself


def test_semantic_neighbours_exclude_only_the_token_itself():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # ids 0 and 1 share a direction
    assert nearest_neighbours(unit_rows(emb), torch.tensor([0, 1]), k=1)[:, 0].tolist() == [1, 0]


def test_bad_corruption_arguments_are_named():
    ids = torch.arange(3, 6)
    with pytest.raises(ValueError, match="corruption mode='swap'; allowed: random, semantic"):
        corrupt(ids, 0.1, "swap", seed=0, random_ids=torch.arange(100, 200))
    for rate in (1.5, 0.0):
        with pytest.raises(ValueError, match=rf"rate={rate}.*\(0, 1\]"):
            corrupt(ids, rate, "random", seed=0, random_ids=torch.arange(100, 200))
    with pytest.raises(ValueError, match="replacement id range"):
        corrupt(ids, 0.1, "random", seed=0)
    with pytest.raises(ValueError, match="input embeddings"):
        corrupt(ids, 0.1, "semantic", seed=0)


def test_repair_protocol_names():
    assert repair_protocol() == "published"
    assert repair_protocol("token", 3) == "iterative-3"
    assert repair_protocol("converter") == "converter"
    assert repair_protocol("converter", 2) == "converter+iterative-2"


def _repair_case():
    original = torch.tensor([[0, 3, 4, 5, 6, 7, 8, 9, 10]])
    corrupted, pos = corrupt(original[0, 1:], 0.5, "random", random_ids=torch.arange(3, 13), seed=2)
    ids = torch.cat([original[:, :1], corrupted[None]], dim=1)
    editable = torch.ones_like(ids, dtype=torch.bool)
    editable[:, 0] = False
    return original, ids, pos + 1, editable


def test_oracle_repairs_everything_and_keeps_clean_tokens():
    original, ids, pos, editable = _repair_case()
    den = OracleDenoiser(original[0])
    repaired, nfe = argmax_repair(den, ids, torch.ones_like(ids), editable)
    assert nfe == 1 and torch.equal(repaired, original)  # fix 100 %, preserve 100 %


def test_identity_fixes_nothing_and_preserves_everything():
    original, ids, pos, editable = _repair_case()
    repaired, nfe = argmax_repair(IdentityDenoiser(), ids, torch.ones_like(ids), editable, passes=3)
    assert nfe == 3 and torch.equal(repaired, ids)
    assert (repaired[0, pos] != original[0, pos]).all()  # fix 0 %


def test_non_editable_positions_never_change():
    original, ids, pos, editable = _repair_case()
    target = original.clone()
    target[0, 0] = 4  # the oracle would change the BOS slot, which is not editable
    repaired, _ = argmax_repair(OracleDenoiser(target[0]), ids, torch.ones_like(ids), editable)
    assert repaired[0, 0] == ids[0, 0]
