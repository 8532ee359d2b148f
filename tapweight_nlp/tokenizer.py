"""Tokenizers: the model's own, or for ``--model tiny`` a byte-level BPE trained on the corpus,
or a saved one (``nlp.tokenizer``: e.g. the ``tokenizer/`` a ``tapweight pretrain nlp`` run keeps).

The tiny tokenizer is RoBERTa's kind (byte-level BPE, Liu et al., 2019) trained with
`tokenizers` on the level I texts, with RoBERTa's special tokens at RoBERTa's ids
(``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4). It is cached under
``<cache_dir>/nlp/tokenizers/<hash of texts and size>`` and read back with
``RobertaTokenizer.from_pretrained`` (transformers ignores vocabulary-file arguments given
to tokenizer constructors, so a folder is the reliable way in).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, RobertaTokenizer

from tapweight import TapweightError, adopt_library_handlers, cache_dir, plain

adopt_library_handlers()  # transformers prints through a stderr handler of its own: through ours instead

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
TINY = "tiny"


def load_tokenizer(opts, texts: Sequence[str]) -> tuple[PreTrainedTokenizerBase, str]:
    """The tokenizer for ``opts.model`` (or ``opts.tokenizer``) and a line for the run log
    saying where it came from."""
    if opts.tokenizer:
        folder = Path(opts.tokenizer).expanduser()
        if not (folder / "vocab.json").is_file():
            raise TapweightError(f"nlp.tokenizer '{opts.tokenizer}' is not a tokenizer folder (no vocab.json); "
                                 "give the tokenizer/ folder of a tapweight pretrain nlp run")
        loader = RobertaTokenizer if opts.model == TINY else AutoTokenizer  # tiny's: vocab and merges alone
        tokenizer = loader.from_pretrained(str(folder))
        return tokenizer, f"{len(tokenizer)} tokens from nlp.tokenizer ({folder})"
    if opts.model == TINY:
        return tiny_tokenizer(texts, opts.tiny_vocab_size)
    try:
        return AutoTokenizer.from_pretrained(opts.model), f"{opts.model}'s own"
    except OSError as err:
        raise TapweightError(
            f"could not load the tokenizer of '{opts.model}' ({plain(str(err).splitlines()[0])}): pass a "
            "local model folder with --model DIR, or --model tiny") from None


def tiny_tokenizer(texts: Sequence[str], vocab_size: int) -> tuple[RobertaTokenizer, str]:
    """A byte-level BPE tokenizer trained on ``texts``, from the cache when it is there."""
    digest = hashlib.sha256(f"{vocab_size}\n{tokenizers.__version__}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    folder = cache_dir() / "nlp" / "tokenizers" / digest.hexdigest()[:16]
    if (folder / "vocab.json").is_file():
        how = "loaded from the cache"
    else:
        _train(texts, vocab_size, folder)
        how = "trained, now cached"
    tokenizer = RobertaTokenizer.from_pretrained(str(folder))
    return tokenizer, f"byte-level BPE, {len(tokenizer)} tokens, {how} ({folder})"


def _train(texts: Sequence[str], vocab_size: int, folder: Path) -> None:
    """Train and save ``vocab.json`` + ``merges.txt``; written aside, then moved in one step."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent))
    bpe.save_model(str(staging))
    try:
        os.replace(staging, folder)  # another process may have written it first: keep theirs
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
