"""The Python tokenizer's fast pattern for text within the Basic Multilingual Plane."""
from __future__ import annotations

from clinical_ner.text import tokenizer as text


def _spans(pattern, sample: str) -> list[tuple[int, int]]:
    return [match.span() for match in pattern.finditer(sample)]


def test_bmp_pattern_tokenizes_every_bmp_code_point_as_the_full_pattern() -> None:
    full = text.token_pattern()
    for code_point in range(text.MAX_BMP_CODE_POINT + 1):
        # The character inside a word, alone between separators, and beside punctuation.
        sample = f"a{chr(code_point)}b {chr(code_point)} ({chr(code_point)}"
        fast = text.token_pattern(sample)
        assert _spans(fast, sample) == _spans(full, sample), hex(code_point)
    assert text.token_pattern("plain text") is not full


def test_text_beyond_the_bmp_gets_the_full_pattern() -> None:
    # U+1D7D8 (a mathematical digit) is a word character, U+1F600 (an emoji) a token of its own.
    sample = "x\U0001d7d8y \U0001f600."
    assert text.token_pattern(sample) is text.token_pattern()
    assert [token.text for token in text.tokenize(sample)] == ["x\U0001d7d8y", "\U0001f600", "."]
    assert text.sentence_token_texts(sample) == [["x\U0001d7d8y", "\U0001f600", "."]]


def test_sentences_end_as_documented_on_both_patterns() -> None:
    for suffix in ("", " \U0001f600"):
        sample = f"Dose 2.5 mg. No fever\nCT: clear and dry{suffix}"
        sentences = [[token.text for token in sentence]
                     for sentence in text.split_sentences(sample, 4)]
        # "2.5" has no separator after its period; a line break ends a sentence; so
        # does the length limit (4 here).
        assert sentences == [["Dose", "2", ".", "5"], ["mg", "."], ["No", "fever"],
                             ["CT", ":", "clear", "and"],
                             ["dry"] + (["\U0001f600"] if suffix else [])]
        assert text.sentence_token_texts(sample, 4) == sentences
        for sentence in text.split_sentences(sample, 4):
            assert all(sample[token.start:token.end] == token.text for token in sentence)


def test_split_sentences_gives_tokenize_s_tokens_with_exact_offsets() -> None:
    # Leading, trailing and mixed separators (no-break space, line and paragraph
    # separators, a zero-width space, a form feed), combining marks and text beyond the
    # BMP: the sentences hold exactly tokenize's tokens, each at its own offsets.
    samples = ["", "   ", "\n\n", " \u00a0Chest pain.\u2028No\u3000fever\u200b!\x0c",
               "e\u0301tat \U0001f600 2.5mg\r\n\r\nCT:clear ", "a" * 5 + " ." * 7]
    for sample in samples:
        for limit in (1, 3, 200):
            sentences = text.split_sentences(sample, limit)
            tokens = [token for sentence in sentences for token in sentence]
            assert tokens == text.tokenize(sample), (sample, limit)
            assert all(sample[token.start:token.end] == token.text for token in tokens)
            assert all(0 < len(sentence) <= limit for sentence in sentences)
