"""Random tiny Hugging Face PyTorch models (odd, distinct sizes so a swapped axis fails loudly),
saved as HF directories: the oracles of the parity tests. Nothing is downloaded."""

import string

import numpy as np
import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    Qwen3Config,
    Qwen3Model,
    XLMRobertaConfig,
    XLMRobertaModel,
)

ENCODER_SIZES = dict(
    vocab_size=97,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=6,
    intermediate_size=72,
    max_position_embeddings=40,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def bert():
    return BertModel(BertConfig(**ENCODER_SIZES, type_vocab_size=2), add_pooling_layer=True)


def xlmr():
    cfg = XLMRobertaConfig(**ENCODER_SIZES, type_vocab_size=1, pad_token_id=1)
    return XLMRobertaModel(cfg, add_pooling_layer=False)


def qwen3():
    cfg = Qwen3Config(
        vocab_size=101,
        hidden_size=40,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=14,
        intermediate_size=56,
        max_position_embeddings=64,
        rope_theta=5000.0,
        rms_norm_eps=1e-6,
    )
    return Qwen3Model(cfg)


# name -> (model builder, pad id, padding side, pooling): the parity cases.
CASES = {
    "bert": (bert, 0, "right", "mean"),
    "xlm-roberta": (xlmr, 1, "right", "cls"),
    "qwen3-left": (qwen3, 0, "left", "last"),
    "qwen3-right": (qwen3, 0, "right", "last"),
}


def randomize(model, seed):
    # HF initialises norms to 1 and biases to 0; random values make those paths observable.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if p.ndim == 1 else 0.0))
    return model.eval()


def batch(vocab, pad_id, side, seed=0, lengths=(11, 7, 3, 11)):
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = np.full((len(lengths), length), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        span = slice(length - n, length) if side == "left" else slice(0, n)
        ids[i, span] = rng.integers(3, vocab, n)
        mask[i, span] = 1
    return ids, mask


def save(model, tmp_path):
    model.save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path


def torch_hidden(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    return out.last_hidden_state.numpy()


WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits]
WORDS += [f"##{c}" for c in string.ascii_lowercase + string.digits]
WORDS += ["shoe", "bag", "pan", "red", "phone", "case", "water", "bottle", "baby", "men"]


def bert_dir(path, seed, *, shards=None):
    """A random tiny BertModel (pooler included) saved as a HF directory with a WordPiece
    tokenizer over `WORDS`."""
    kwargs = {"max_shard_size": shards} if shards else {}
    randomize(bert(), seed).save_pretrained(path, safe_serialization=True, **kwargs)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}, model_max_length=40)
    tokenizer.save_pretrained(path)
    return path
