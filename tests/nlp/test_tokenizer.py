"""The tiny model's byte-level BPE tokenizer: trained on the corpus, cached, RoBERTa's ids."""

from tapweight_nlp.tokenizer import tiny_tokenizer
from tests.nlp.conftest import SENTENCES


def test_trained_once_then_loaded_from_the_cache(cache_dir):
    texts = SENTENCES + ["a corpus only this test uses"]
    first, how_first = tiny_tokenizer(texts, 400)
    second, how_second = tiny_tokenizer(texts, 400)
    assert "trained" in how_first and "loaded from the cache" in how_second
    folders = list((cache_dir / "nlp" / "tokenizers").iterdir())
    assert any((f / "vocab.json").is_file() and (f / "merges.txt").is_file() for f in folders)
    sentence = "a charming , witty film"
    assert first(sentence)["input_ids"] == second(sentence)["input_ids"]
    # another corpus or another size is another tokenizer
    assert "trained" in tiny_tokenizer(texts, 300)[1]
    assert "trained" in tiny_tokenizer(texts[:-1] + ["something else"], 400)[1]


def test_roberta_special_tokens_and_pair_layout(cache_dir):
    tokenizer, _ = tiny_tokenizer(SENTENCES, 400)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    assert (tokenizer.mask_token_id, tokenizer.pad_token_id) == (4, 1)
    assert 261 < len(tokenizer) <= 400  # 256 bytes + 5 specials + some merges
    pair = tokenizer("a charming film", "a tedious film")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(pair)
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert tokens.count("</s>") == 3  # <s> a </s></s> b </s>
    # byte-level: nothing is unknown, text round-trips
    text = "naïve – ünïcödé 🎬"
    assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
