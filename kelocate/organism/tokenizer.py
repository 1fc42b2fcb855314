"""A SentencePiece-style BPE tokenizer trained from text, wrapped as a `PreTrainedTokenizerFast`.

Words get a leading-space piece ('▁Japan') as in Llama-2's tokenizer, and BOS is prepended by the
post-processor, so the organism exercises the same span and offset handling as a real Llama.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
UNK_ID, BOS_ID, EOS_ID, PAD_ID = range(4)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000,
                    min_frequency: int = 0) -> PreTrainedTokenizerFast:
    """Train a byte-fallback-free BPE on `texts`; characters seen in `texts` are always representable.

    `min_frequency` > 1 stops merging pairs seen fewer times (the organism uses 2 so that a made-up name
    that occurs once in its tokenizer text never becomes a single token).
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", BOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", clean_up_tokenization_spaces=False)
