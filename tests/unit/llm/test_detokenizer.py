"""Incremental detokenization and stop strings on a byte-level BPE tokenizer (multi-byte
characters split over several tokens)."""

from __future__ import annotations

import pytest

from tests.unit.llm.conftest import build_tokenizer
from trident.backends.llm.engine.detokenizer import IncrementalDetokenizer

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "héllo wörld 東京 日本語 😀 🚀 naïve żółć 象形 🐙 ñandú",
    "stop strings must never leak into the streamed text",
]


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return build_tokenizer()


def stream(tok, prompt: list[int], output: list[int], stop: list[str], include: bool = False):  # type: ignore[no-untyped-def]
    d = IncrementalDetokenizer(tok, prompt, stop, include)
    deltas: list[str] = []
    hit = None
    for t in output:
        hit = d.add_token(t)
        deltas.append(d.take_delta(finished=hit is not None))
        if hit is not None:
            break
    else:
        deltas.append(d.take_delta(finished=True))
    return deltas, hit


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_the_decoded_text_and_never_split_a_character(tok, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode(text)
    if not text.isascii():  # the test must see characters split over several tokens
        assert any(tok.decode([t]) == "\ufffd" for t in ids)
    for cut in (1, 3):
        deltas, hit = stream(tok, ids[:cut], ids[cut:], [])
        assert hit is None
        assert "".join(deltas) == tok.decode(ids[cut:])
        assert not any("\ufffd" in d for d in deltas)


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("stop strings must never leak into the streamed text", "never leak"),
        ("żółć 象形 🐙 ñandú 日本語", "🐙 ñ"),
        ("the quick brown fox jumps over the lazy dog", "o"),
    ],
)
def test_a_stop_string_never_leaks_while_streaming(tok, text: str, stop: str) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode(text)
    deltas, hit = stream(tok, ids[:1], ids[1:], [stop, "zzz-not-there"])
    assert hit == stop
    before = tok.decode(ids)[len(tok.decode(ids[:1])) :]
    expected = before[: before.index(stop)]
    assert "".join(deltas) == expected
    streamed = ""
    for d in deltas:
        streamed += d
        assert expected.startswith(streamed)  # no character of the stop string, ever


def test_include_stop_str_in_output_keeps_it(tok) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode("the quick brown fox jumps")
    deltas, hit = stream(tok, ids[:1], ids[1:], ["brown"], include=True)
    assert hit == "brown" and "".join(deltas).endswith("brown")


def test_the_earliest_of_several_stop_strings_wins(tok) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode("a paged cache holds keys and values")
    deltas, hit = stream(tok, ids[:1], ids[1:], ["values", "keys"])
    assert hit == "keys" and "keys" not in "".join(deltas)
