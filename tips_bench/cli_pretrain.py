"""``tips-bench pretrain``: train a mini TIPS-architecture backbone on the synthetic world."""

from __future__ import annotations

import argparse
import signal


def _recipes_help() -> str:
    from tips_bench.pretrain.recipes import RECIPES

    return "\n".join(f"  {name:15} {cls.summary}" for name, cls in RECIPES.items())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Build the configuration from the options, train, print where the files went."""
    from tips_bench.pretrain.models import TowerSizes
    from tips_bench.pretrain.trainer import PretrainConfig, pretrain

    heads = args.heads or max(1, args.width // 64)
    sizes = TowerSizes(image_size=args.image_size, width=args.width, depth=args.depth, heads=heads,
                       text_depth=args.text_depth, text_heads=heads)
    config = PretrainConfig(recipe=args.recipe, seed=args.seed, steps=args.steps, minutes=args.minutes,
                            batch_size=args.batch_size, sizes=sizes, vocab_size=args.vocab_size, lr=args.lr,
                            threads=args.threads, workers=args.workers, device=args.device,
                            local_size=args.local_size, tokenizer_scenes=args.tokenizer_scenes)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed run removes its temporary folder too
    try:
        record = pretrain(config, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"wrote {args.out}: {', '.join(record['files'])} and recipe.json")
    print(f"{record['steps']} steps of {record['batch_size']} images in {record['train_seconds']:.0f} s "
          f"({record['steps_per_s']:.2f} steps/s, {record['threads']} thread(s)); final losses "
          + ", ".join(f"{k} {v:.3f}" for k, v in record["final_losses"].items()))
    if sizes == TowerSizes(heads=sizes.heads, text_heads=sizes.text_heads) and heads == max(1, args.width // 64):
        print(f"evaluate it: tips-bench run --backbone {record['name']} --checkpoint {args.out}")
    else:
        print(f"evaluate it: tips-bench run --backbone tips --checkpoint {args.out}/{record['name']}_vision.npz "
              f"--num-heads {heads} --text-num-heads {heads}")
    print(f"rebuild it: {record['command']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand."""
    from tips_bench.pretrain.trainer import DEFAULT_STEPS, PretrainConfig

    d = PretrainConfig(recipe="")
    p = sub.add_parser(
        "pretrain", help="train a mini TIPS backbone on the synthetic world (the TIPS ablation in miniature)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train a tiny TIPS-architecture image tower (and text tower) on images and captions rendered on the\n"
            "fly by the seeded synthetic world (its 'pretrain' split, which no task uses), then write the\n"
            "official TIPS files into --out: mini_<recipe>_vision.npz, mini_<recipe>_text.npz (contrastive\n"
            "recipes), tokenizer.model (a SentencePiece model trained on world captions) and recipe.json\n"
            "(recipe, seed, steps, timings, versions, file hashes and the exact command that rebuilds it).\n\n"
            f"Recipes:\n{_recipes_help()}\n\n"
            "Runs are deterministic on CPU for a given seed and thread count: the same command gives the same\n"
            "bytes. --minutes picks the step count from the speed of the first steps; the recorded command\n"
            "then names that --steps. The mini_<recipe> backbones ship checkpoints built this way.\n\n"
            "Examples:\n"
            "  tips-bench pretrain --recipe tips_full --out runs/tips_full              # the shipped settings\n"
            "  tips-bench pretrain --recipe clip_noisy --minutes 5 --seed 1 --out runs/clip_s1\n"
            "  tips-bench run --backbone mini_tips_full --checkpoint runs/tips_full    # evaluate the result"),
    )
    p.add_argument("--recipe", required=True, help="training recipe (see the list above)")
    p.add_argument("--out", required=True, help="output folder (created; must be new or empty unless --overwrite)")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default: {DEFAULT_STEPS}, or what fits in --minutes)")
    p.add_argument("--minutes", type=float, help="time budget: choose the step count that fits (capped by --steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, masks, crops and world stream (default 0)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    p.add_argument("--image-size", type=int, default=d.sizes.image_size,
                   help=f"training resolution, a multiple of 14 (default {d.sizes.image_size}; evaluation "
                   "interpolates the position embeddings to the task's size)")
    p.add_argument("--width", type=int, default=d.sizes.width, help=f"tower width (default {d.sizes.width})")
    p.add_argument("--depth", type=int, default=d.sizes.depth, help=f"image tower blocks (default {d.sizes.depth})")
    p.add_argument("--text-depth", type=int, default=d.sizes.text_depth,
                   help=f"text tower blocks (default {d.sizes.text_depth})")
    p.add_argument("--heads", type=int, help="attention heads of both towers (default: width / 64, as the TIPS loader)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size,
                   help=f"SentencePiece vocabulary size (default {d.vocab_size})")
    p.add_argument("--tokenizer-scenes", type=int, default=d.tokenizer_scenes,
                   help=f"world scenes whose captions train the tokenizer (default {d.tokenizer_scenes})")
    p.add_argument("--local-size", type=int, default=d.local_size,
                   help=f"side of the local crops of self-distillation, a multiple of 14 (default {d.local_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"torch CPU threads, recorded; results are byte-identical only at equal counts "
                   f"(default {d.threads}: fastest on a shared 2-core machine)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help=f"processes rendering the world ahead of the model (default {d.workers})")
    p.add_argument("--device", default=d.device, help="cpu (deterministic) or cuda (repeatable to float tolerance)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)
