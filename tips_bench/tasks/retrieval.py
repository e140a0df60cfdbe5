"""Image-text retrieval: recall@k in both directions with several captions per image."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from tips_bench.metrics import retrieval_recall
from tips_bench.tasks.base import EvalContext, FeatureRequest, Task, register_task_type
from tips_bench.tasks.common import global_key, l2n, read_globals


@register_task_type
class RetrievalTask(Task):
    """Cosine similarity of L2-normalised text and image embeddings (CLIP_benchmark / BLIP convention)."""

    type_name = "retrieval"
    needs: ClassVar[frozenset[str]] = frozenset({"image_global", "text"})

    def request(self, role: str) -> FeatureRequest:
        return FeatureRequest(layers="last", globals=True, targets=())

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        ds = ctx.datasets["eval"]
        which = self.d.p("captions", "all")  # 'all', or an index into each image's caption list
        texts, image_of_text = [], []
        for i in range(len(ds)):
            caps = captions_of(ds, i)
            chosen = caps if which == "all" else [caps[int(which)]]
            texts += chosen
            image_of_text += [i] * len(chosen)
        images = l2n(read_globals(ctx.entries["eval"], global_key(ctx)))
        text_emb = l2n(ctx.encode_texts(texts))
        scores = retrieval_recall(text_emb @ images.T, np.asarray(image_of_text), ks=(1, 5, 10))
        return {m: v for m, v in scores.items() if m in self.d.metrics}


def captions_of(ds, index: int) -> list[str]:
    """Captions of item ``index`` without decoding its image when the dataset offers ``captions()``."""
    if hasattr(ds, "captions") and callable(ds.captions):
        return list(ds.captions(index)) if _takes_index(ds.captions) else list(ds.captions()[index])
    return list(ds[index]["captions"])


def _takes_index(fn) -> bool:
    import inspect

    try:
        return len(inspect.signature(fn).parameters) >= 1
    except (TypeError, ValueError):
        return False
