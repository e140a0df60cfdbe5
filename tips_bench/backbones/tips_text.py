"""The TIPS text tower and tokenizer, without TensorFlow.

No library ships this tower (timm has only the TIPS image towers, open_clip has no TIPS), so it
is written here to the architecture of the official ``pytorch/text_encoder.py``, with module
names that match the ``*_text.npz`` keys so the release loads strictly:

token embedding x sqrt(width) + sinusoidal positions (sin | cos, timescales 1..1e4) -> pre-LN
blocks (multi-head attention with padded keys masked; MLP c_fc -> ReLU -> c_proj, zeroed on
padding) -> ``ln_final`` -> mean over non-padding tokens. Output is not L2-normalised.

Tokenizer: SentencePiece (the ``sentencepiece`` package runs the same C++ ``Encode`` as the
official TF.Text op), ASCII-only lower-casing (as ``tf.strings.lower``), no BOS/EOS, pad id 0,
64 tokens. **Deliberate difference:** padding flags are computed per row (1 from the row's own
length on). The official wrapper pads to the longest row of the batch and, when any row exceeds
64 tokens, marks every position of every row as real, so short rows in such a batch are
mean-pooled over padding and results depend on batch composition. Both agree for every batch
whose rows all fit in 64 tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

MAX_LEN = 64
PAD_ID = 0


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as ``tf.strings.lower`` does with its default encoding."""
    return text.encode("utf-8").lower().decode("utf-8")


class TipsTokenizer:
    """SentencePiece tokenizer with TIPS conventions; returns (ids, paddings) int64 (B, max_len)."""

    def __init__(self, model_file: str | Path, max_len: int = MAX_LEN):
        import sentencepiece as spm

        self.processor = spm.SentencePieceProcessor(model_file=str(model_file))
        self.max_len = max_len

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(texts), self.max_len), PAD_ID, dtype=np.int64)
        paddings = np.ones((len(texts), self.max_len), dtype=np.int64)
        encoded = self.processor.encode([ascii_lower(t) for t in texts], out_type=int)
        for row, pieces in enumerate(encoded):
            pieces = pieces[: self.max_len]
            ids[row, : len(pieces)] = pieces
            paddings[row, : len(pieces)] = 0
        return ids, paddings


class BundledBpeTokenizer:
    """For ``--random-init`` only: open_clip's bundled BPE with the TIPS conventions (no download).

    The official SentencePiece model is a download; a randomly initialised text tower has no
    vocabulary of its own, so any offline tokenizer gives an equivalent baseline.
    """

    vocab_size = 49408

    def __init__(self, max_len: int = MAX_LEN):
        from open_clip.tokenizer import SimpleTokenizer

        self._bpe = SimpleTokenizer()
        self.max_len = max_len

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(texts), self.max_len), PAD_ID, dtype=np.int64)
        paddings = np.ones((len(texts), self.max_len), dtype=np.int64)
        for row, text in enumerate(texts):
            pieces = self._bpe.encode(ascii_lower(text))[: self.max_len]
            ids[row, : len(pieces)] = pieces
            paddings[row, : len(pieces)] = 0
        return ids, paddings


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim): sin of position x inverse timescales, then cos (timescales 1..1e4)."""
    half = dim // 2
    log_increment = math.log(1e4) / max(half - 1, 1)
    inv_timescales = torch.exp(torch.arange(half, dtype=torch.float32) * -log_increment)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    signal = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return nn.functional.pad(signal, (0, dim % 2))[None]


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c_fc(x)) * keep
        return self.c_proj(x) * keep


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = _Mlp(width, hidden)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x), (~padding).to(x.dtype)[..., None])


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, hidden: int):
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(width, heads, hidden) for _ in range(layers))


class TipsTextEncoder(nn.Module):
    """TIPS text tower; ``forward(ids, paddings)`` -> (B, width) mean-pooled embeddings."""

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, mlp_dim: int):
        super().__init__()
        self.width = width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.transformer = _Transformer(width, layers, heads, mlp_dim)
        self.ln_final = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        padding = paddings.bool()
        # Columns that are padding in every row change nothing (masked as keys, zeroed in the pooling, positions
        # are absolute): dropping them makes a batch of short prompts cost its longest prompt, not the 64-token
        # context (about 6x fewer FLOPs for CLIP's ImageNet templates).
        longest = int((~padding).sum(dim=1).max()) if padding.numel() else 0
        if 0 < longest < ids.shape[1]:
            ids, padding = ids[:, :longest], padding[:, :longest]
        x = self.token_embedding(ids) * math.sqrt(self.width)
        x = x + sinusoidal_positions(ids.shape[1], self.width).to(x.device, x.dtype)
        for block in self.transformer.resblocks:
            x = block(x, padding)
        x = self.ln_final(x)
        # Fully padded rows (empty text) attend to nothing and give NaN; where() drops them like
        # the official pooling, so an empty text embeds to zeros.
        x = torch.where(padding[..., None], torch.zeros_like(x), x)
        count = (~padding).sum(dim=1, keepdim=True).to(x.dtype)
        return x.sum(dim=1) / (count + 1e-8)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], heads: int | None = None) -> TipsTextEncoder:
        """Build from ``*_text.npz`` tensors (architecture read from shapes) and load strictly."""
        vocab, width = sd["token_embedding.weight"].shape
        layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
        mlp_dim = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        model = cls(vocab, width, layers, heads or max(1, width // 64), mlp_dim)
        model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("temperature")}, strict=True)
        return model.eval()
