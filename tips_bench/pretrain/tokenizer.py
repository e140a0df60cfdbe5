"""A tiny SentencePiece tokenizer trained on world captions, with the TIPS conventions.

Pad id 0, unknown id 1, no BOS/EOS (as the official ``tokenizer.model``), text lower-cased
ASCII-only before training (the TIPS tokenizer lower-cases the same way before encoding), no
normalisation rules (keeps the model file small). Training runs single-threaded on a fixed
corpus, so the model bytes are a pure function of the corpus and the vocabulary size.
"""

from __future__ import annotations

import io
import logging

import sentencepiece as spm

from tips_bench.backbones.tips_text import ascii_lower
from tips_bench.errors import TipsBenchError

log = logging.getLogger(__name__)


def train_tokenizer(lines: list[str], vocab_size: int) -> bytes:
    """Serialized SentencePiece BPE model (bytes of a ``tokenizer.model``) for ``lines``."""
    if vocab_size < 8:
        raise TipsBenchError(f"--vocab-size {vocab_size} is too small; use at least 8 (default 256)")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([ascii_lower(line) for line in lines]),
            model_writer=model,
            model_type="bpe",  # whole world words become single pieces (unigram splits them here)
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a corpus with fewer possible pieces yields a smaller vocabulary
            character_coverage=1.0,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            normalization_rule_name="identity",
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise TipsBenchError(f"SentencePiece could not build a vocabulary of {vocab_size} pieces from the world "
                             f"captions ({exc}); choose a smaller --vocab-size") from exc
    return model.getvalue()


def load_processor(model_bytes: bytes) -> spm.SentencePieceProcessor:
    """A processor for serialized model bytes."""
    return spm.SentencePieceProcessor(model_proto=model_bytes)
