"""Summarization data: local JSONL validation, hub fallback and its errors, the seed-42 draw, word cut."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from dslbench.data import summarization as summ
from dslbench.data.summarization import SummarizationDataError, load_examples, read_jsonl, truncate_words
from tests.shared_data import SHARED_DATA, needs

SHARED = SHARED_DATA / "summarization"
needs_shared = needs(SHARED / "xsum.jsonl")


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _rows(n: int, words: int = 10) -> list[dict]:
    return [
        {"id": f"d{i}", "document": " ".join(f"w{i}_{j}" for j in range(words)), "summary": f"summary {i}"}
        for i in range(n)
    ]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(summ.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return tmp_path


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"id": "a", "document": "text"}', "missing field 'summary'"),
        ("this is not json", "not valid JSON"),
        ('{"id": "a", "document": "   ", "summary": "s"}', "empty document"),
        ('{"id": "a", "document": "d", "summary": ""}', "empty summary"),
        ('["id", "document", "summary"]', "expected a JSON object"),
        ('{"id": "d0", "document": "d", "summary": "s"}', "duplicate id 'd0' (first on line 1)"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "xsum.jsonl", [_rows(1)[0], "", bad])  # the bad row is on line 3
    with pytest.raises(SummarizationDataError) as err:
        read_jsonl(path)
    assert f"{path}, line 3" in str(err.value)
    assert message in str(err.value)


def test_bad_line_surfaces_through_load_examples(data_dir):
    _write(data_dir / "cnndm.jsonl", [*_rows(2), {"id": "x", "summary": "s"}])
    with pytest.raises(SummarizationDataError, match=r"cnndm\.jsonl, line 3: missing field 'document'"):
        load_examples("cnndm")


def test_blank_lines_are_allowed_and_ids_become_strings(tmp_path):
    path = _write(tmp_path / "x.jsonl", [{"id": 7, "document": "a b", "summary": "c", "url": "u"}, "", "  "])
    assert read_jsonl(path) == [{"id": "7", "document": "a b", "summary": "c"}]


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "x.jsonl").write_text("\n")
    with pytest.raises(SummarizationDataError, match="no examples"):
        read_jsonl(tmp_path / "x.jsonl")


# ----------------------------------------------------------------- draw and cut
def test_truncate_words():
    assert truncate_words("a  b\nc", 5) == "a  b\nc"  # shorter: untouched
    assert truncate_words("a  b\nc d", 3) == "a b c"  # cut: first words, single spaces
    assert truncate_words("a b c", None) == "a b c"


def test_draw_is_the_published_seeded_shuffle(data_dir):
    _write(data_dir / "xsum.jsonl", _rows(50))
    order = list(range(50))
    random.Random(42).shuffle(order)
    got = load_examples("xsum", n_docs=10)
    assert [r["id"] for r in got] == [f"d{i}" for i in order[:10]]
    assert load_examples("xsum", n_docs=10) == got  # deterministic
    assert [r["id"] for r in load_examples("xsum", n_docs=10, seed=1)] != [r["id"] for r in got]
    # Fewer available than asked: all of them; None / "all": all of them.
    assert len(load_examples("xsum")) == 50
    assert len(load_examples("xsum", n_docs=None)) == len(load_examples("xsum", n_docs="all")) == 50


def test_word_limit_and_row_shape(data_dir):
    _write(data_dir / "samsum.jsonl", _rows(3, words=30))
    rows = load_examples("samsum", n_docs=3, max_words=12)
    assert all(len(r["document"].split()) == 12 for r in rows)
    assert set(rows[0]) == {"id", "document", "summary", "instruction"}
    assert rows[0]["instruction"] == "Summarize the following dialogue in 1-2 sentences:"
    assert all(len(r["document"].split()) == 30 for r in load_examples("samsum", max_words=0))
    # Settings may arrive as strings (model_args-style metadata).
    assert len(load_examples("samsum", n_docs="2", max_words="5")) == 2


@pytest.mark.parametrize("kwargs", [{"n_docs": -1}, {"n_docs": "many"}, {"max_words": 2.5}, {"seed": None}])
def test_bad_settings(data_dir, kwargs):
    _write(data_dir / "xsum.jsonl", _rows(3))
    with pytest.raises(SummarizationDataError):
        load_examples("xsum", **kwargs)


# ----------------------------------------------------------------- hub fallback
def test_missing_file_offline_names_file_and_env_var(data_dir):
    _write(data_dir / "xsum.jsonl", _rows(3))  # another dataset's file is there; pubmed's is not
    with pytest.raises(SummarizationDataError) as err:
        load_examples("pubmed")
    msg = str(err.value)
    assert str(data_dir / "pubmed.jsonl") in msg and "DSLBENCH_DATA_DIR" in msg
    assert "ccdv/pubmed-summarization" in msg and "offline" in msg


def test_unset_env_offline_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(summ.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SummarizationDataError, match=r"DSLBENCH_DATA_DIR is not set.*xsum\.jsonl"):
        load_examples("xsum")


def test_data_dir_that_does_not_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(summ.DATA_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(SummarizationDataError, match="is not a directory"):
        load_examples("xsum")


class _FakeHub(list):
    """Stands in for a datasets.Dataset: len() and row access by index."""


def test_hub_fallback_maps_fields_and_skips_empty_rows(data_dir, monkeypatch):
    import datasets

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []
    rows = [{"article": f" article {i} " + "x " * 20, "abstract": f"abstract {i}"} for i in range(30)]
    rows[5]["article"] = ""  # passed over, as in the published draw

    def fake_load(path, name=None, split=None):
        calls.append((path, name, split))
        return _FakeHub(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    got = load_examples("arxiv", n_docs=29, max_words=3)
    assert calls == [("ccdv/arxiv-summarization", None, "test")]
    order = [i for i in (lambda o: (random.Random(42).shuffle(o), o)[1])(list(range(30))) if i != 5]
    assert [r["id"] for r in got] == [str(i) for i in order]  # no id column: the row index
    assert got[0]["document"] == f"article {order[0]} x"
    assert got[0]["summary"] == f"abstract {order[0]}"
    assert summ.source_of("arxiv") == "hub:ccdv/arxiv-summarization"

    calls.clear()
    monkeypatch.setattr(
        datasets, "load_dataset",
        lambda path, name=None, split=None: calls.append((path, name)) or _FakeHub(
            [{"id": "c1", "article": "a b c", "highlights": "h"}]
        ),
    )
    assert load_examples("cnndm") == [
        {"id": "c1", "document": "a b c", "summary": "h", "instruction": summ.DATASETS["cnndm"].instruction}
    ]
    assert calls == [("abisee/cnn_dailymail", "3.0.0")]


def test_hub_failure_is_a_clear_error(data_dir, monkeypatch):
    import datasets

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def boom(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(SummarizationDataError, match=r"xsum\.jsonl.*ConnectionError: no route to host.*DSLBENCH_DATA_DIR"):
        load_examples("xsum")


def test_published_dataset_table():
    d = summ.DATASETS
    assert (d["xsum"].hub_id, d["xsum"].hub_config, d["xsum"].gen_length) == ("EdinburghNLP/xsum", None, 128)
    assert (d["cnndm"].hub_id, d["cnndm"].hub_config, d["cnndm"].gen_length) == ("abisee/cnn_dailymail", "3.0.0", 256)
    assert (d["pubmed"].hub_id, d["pubmed"].gen_length) == ("ccdv/pubmed-summarization", 256)
    assert (d["arxiv"].hub_id, d["arxiv"].gen_length) == ("ccdv/arxiv-summarization", 256)
    assert all(s.split == "test" for s in d.values())


# ----------------------------------------------------------------- the shared real data
@needs_shared
def test_shared_files_validate():
    sizes = {name: len(read_jsonl(SHARED / f"{name}.jsonl")) for name in summ.DATASETS}
    assert sizes == {"xsum": 1000, "cnndm": 250, "pubmed": 100, "arxiv": 100, "samsum": 819}


@needs_shared
def test_shared_seed42_draw_is_stable(monkeypatch):
    monkeypatch.setenv(summ.DATA_DIR_ENV, str(SHARED))
    first = [r["id"] for r in load_examples("xsum", n_docs=100)]
    assert len(first) == len(set(first)) == 100
    assert first == [r["id"] for r in load_examples("xsum", n_docs=100)]
    # A larger draw extends a smaller one (the same shuffled order), whatever the word limit.
    assert [r["id"] for r in load_examples("xsum", n_docs=1000, max_words=10)][:100] == first
    # Pinned: a change of the draw algorithm shows up here.
    assert first[:3] == PINNED_XSUM_IDS
    full = load_examples("xsum")
    assert len(full) == 1000 and max(len(r["document"].split()) for r in full) <= 1500


PINNED_XSUM_IDS = ["38630833", "37412258", "29385276"]


# ----------------------------------------------------------------- encodings, ambiguous folders (#15)
def test_latin1_file_names_file_line_and_byte_offset(data_dir):
    good = json.dumps({"id": "1", "document": "plain text", "summary": "fine"}) + "\n"
    bad = json.dumps({"id": "2", "document": "café au lait", "summary": "s"}, ensure_ascii=False) + "\n"
    path = data_dir / "samsum.jsonl"
    path.write_bytes(good.encode() + bad.encode("latin-1"))
    offset = len(good.encode()) + bad.encode("latin-1").index(b"\xe9")
    with pytest.raises(SummarizationDataError) as err:
        load_examples("samsum")
    msg = str(err.value)
    assert f"{path}, line 2, byte {offset} of the file: not UTF-8 (byte 0xe9" in msg


def test_utf8_with_byte_order_mark_and_non_latin_text_is_read(tmp_path):
    row = {"id": "1", "document": "Кошка сидела на ковре.", "summary": "Кошка."}
    path = tmp_path / "ru.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row, ensure_ascii=False).encode() + b"\n")
    assert read_jsonl(path)[0]["document"] == row["document"]


def test_two_subfolders_with_the_same_file_is_an_error_naming_both(data_dir):
    for sub in ("a", "b"):
        (data_dir / sub).mkdir()
        _write(data_dir / sub / "samsum.jsonl", _rows(3))
    with pytest.raises(SummarizationDataError) as err:
        load_examples("samsum")
    assert str(data_dir / "a" / "samsum.jsonl") in str(err.value)
    assert str(data_dir / "b" / "samsum.jsonl") in str(err.value) and "ambiguous" in str(err.value)


def test_a_directory_named_like_the_file_says_so(data_dir):
    (data_dir / "samsum.jsonl").mkdir()
    with pytest.raises(SummarizationDataError, match=r"samsum\.jsonl is a directory, not a data file"):
        load_examples("samsum")
    with pytest.raises(SummarizationDataError, match="is a directory"):
        read_jsonl(data_dir / "samsum.jsonl")
