"""Active learning: how many labels uncertainty+diversity saves over random picks.

The production stream is one the model was not trained for: **printed digits**
(`digitops.data.printed`), rendered from
the 22 DejaVu faces this machine has (sans, serif, mono; book, bold, oblique, condensed,
extra-light), at random sizes, tilts (±12°), positions, stroke blur and JPEG quality, then put
through the service's own preprocessing (`digitops.serving.preprocess`), so the model sees them
as it would in production. MNIST digits are handwritten; printed ones are a real shift (a model
trained on MNIST alone reads them at about 80-90 %).

A base model (`DigitCNN`, the default config) is trained on MNIST. For each seed, a pool of
`--pool` stream images is drawn, the base model scores it, and each strategy picks each budget
of labels with `digitops.labeling.select.choose` (the code of `digitops select`). The base model
is then retrained on MNIST plus the picked labels (warm start: `--steps` steps of batches of
`--batch` MNIST images and `--labeled` picked ones), and measured on `--test` held-out stream
images and on MNIST test. Prints JSON; `labels_needed` says, for the accuracy random reaches at
each budget, how many labels uncertainty+diversity needed for the same (interpolated).

    python benchmarks/active_learning.py [--budgets 10 20 40 80 160 320] [--seeds 3] [--out F]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from digitops.config import Config
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.data.printed import fonts, photograph
from digitops.labeling.select import STRATEGIES, choose, score
from digitops.model.cnn import DigitCNN
from digitops.serving.preprocess import ImageError, preprocess


def render(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` printed digits (`digitops.data.printed`) as the service's preprocessing leaves
    them (N×28×28 uint8); a photo the service would refuse is replaced by another."""
    rng = np.random.default_rng(seed)
    faces = fonts()
    images, labels = [], []
    while len(images) < count:
        digit = int(rng.integers(10))
        try:
            pixels = preprocess(photograph(rng, faces, digit))
        except ImageError:  # a digit pushed off the page: draw another
            continue
        images.append(np.round(pixels * 255).astype(np.uint8))
        labels.append(digit)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images).copy()).float().div_(255).unsqueeze(1)


def accuracy(net: DigitCNN, images: np.ndarray, labels: np.ndarray) -> float:
    net.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [net(tensor(images[i : i + 2000])).argmax(1) for i in range(0, len(images), 2000)]
        )
    return float((predicted.numpy() == labels).mean())


def fit(
    net: DigitCNN,
    mnist: tuple[np.ndarray, np.ndarray],
    picked: tuple[np.ndarray, np.ndarray] | None,
    steps: int,
    batch: int,
    labeled: int,
    lr: float,
    seed: int,
) -> None:
    """AdamW with a one-cycle schedule (the project's optimizer); each step a batch of MNIST
    and, when given, `labeled` picked images drawn with replacement."""
    cfg = Config().train
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(steps):
        rows = rng.integers(len(mnist[0]), size=batch)
        x, y = mnist[0][rows], mnist[1][rows]
        if picked is not None:
            extra = rng.integers(len(picked[0]), size=labeled)
            x = np.concatenate([x, picked[0][extra]])
            y = np.concatenate([y, picked[1][extra]])
        loss = F.cross_entropy(net(tensor(x)), torch.from_numpy(y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def scores_of(net: DigitCNN, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    with torch.no_grad():
        logits, embeddings = net.forward_with_embedding(tensor(images))
    return torch.softmax(logits, 1).numpy(), embeddings.numpy()


def labels_needed(budgets: list[int], curve: list[float], target: float) -> float | None:
    """Labels at which `curve` (mean accuracy per budget) reaches `target`, interpolated on a
    log scale between budgets; None when it never does."""
    if curve[0] >= target:
        return float(budgets[0])
    points = list(zip(budgets, curve, strict=True))
    for (b0, a0), (b1, a1) in itertools.pairwise(points):
        if a0 < target <= a1:
            share = (target - a0) / (a1 - a0)
            return float(np.exp(np.log(b0) + share * (np.log(b1) - np.log(b0))))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 40, 80, 160, 320])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--strategies", nargs="+", default=["uncertainty-diversity", "random"])
    parser.add_argument("--base-epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--labeled", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    assert set(args.strategies) <= set(STRATEGIES), args.strategies
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    mnist = load_idx_dir(BUNDLED_MNIST)
    train = (mnist.train_images, mnist.train_labels)
    test_images, test_labels = render(args.test, seed=10_000)
    cfg = Config()
    torch.manual_seed(0)
    mean = float(train[0].mean() / 255)
    std = float(train[0].std() / 255)
    base = DigitCNN(10, cfg.model.width, cfg.model.dropout, mean, std)
    base_steps = args.base_epochs * len(train[0]) // cfg.train.batch_size
    fit(base, train, None, base_steps, cfg.train.batch_size, 0, cfg.train.lr, seed=0)
    before = {
        "stream_accuracy": accuracy(base, test_images, test_labels),
        "mnist_test_accuracy": accuracy(base, mnist.test_images, mnist.test_labels),
    }
    # The same warm-start retraining without new labels: what the retraining alone does.
    replay = DigitCNN(10, cfg.model.width, cfg.model.dropout, mean, std)
    replay.load_state_dict(base.state_dict())
    fit(replay, train, None, args.steps, args.batch, 0, args.lr, seed=0)
    no_labels = {
        "stream_accuracy": accuracy(replay, test_images, test_labels),
        "mnist_test_accuracy": accuracy(replay, mnist.test_images, mnist.test_labels),
    }
    print(f"base model: {before}; retrained without labels: {no_labels}", file=sys.stderr)

    runs = []
    for seed in range(args.seeds):
        pool_images, pool_labels = render(args.pool, seed=seed + 1)
        probabilities, embeddings = scores_of(base, pool_images)
        pool_scores = score(probabilities)
        for strategy in args.strategies:
            for budget in args.budgets:
                chosen = choose(pool_scores, embeddings, budget, strategy, seed=seed)
                net = DigitCNN(10, cfg.model.width, cfg.model.dropout, mean, std)
                net.load_state_dict(base.state_dict())
                picked = (pool_images[chosen], pool_labels[chosen])
                fit(net, train, picked, args.steps, args.batch, args.labeled, args.lr, seed)
                run = {
                    "seed": seed,
                    "strategy": strategy,
                    "budget": budget,
                    "classes_picked": len(set(pool_labels[chosen].tolist())),
                    "base_wrong_in_pick": int(
                        (pool_scores.predicted[chosen] != pool_labels[chosen]).sum()
                    ),
                    "stream_accuracy": accuracy(net, test_images, test_labels),
                    "mnist_test_accuracy": accuracy(net, mnist.test_images, mnist.test_labels),
                }
                runs.append(run)
                print(json.dumps(run), file=sys.stderr)

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for strategy in args.strategies:
        summary[strategy] = {}
        for budget in args.budgets:
            mine = [r for r in runs if r["strategy"] == strategy and r["budget"] == budget]
            summary[strategy][str(budget)] = {
                key: statistics.mean(r[key] for r in mine)
                for key in ("stream_accuracy", "mnist_test_accuracy", "base_wrong_in_pick")
            } | {"stream_accuracy_sd": statistics.pstdev(r["stream_accuracy"] for r in mine)}
    needed = []
    if {"uncertainty-diversity", "random"} <= set(args.strategies):
        curve = {
            s: [summary[s][str(b)]["stream_accuracy"] for b in args.budgets]
            for s in ("uncertainty-diversity", "random")
        }
        for budget, target in zip(args.budgets, curve["random"], strict=True):
            found = labels_needed(args.budgets, curve["uncertainty-diversity"], target)
            needed.append(
                {
                    "random_labels": budget,
                    "random_stream_accuracy": target,
                    "uncertainty_diversity_labels": None if found is None else round(found, 1),
                    "ratio": None if found is None else round(found / budget, 3),
                }
            )
    result = {
        "benchmark": "active_learning",
        "stream": "printed digits: 22 DejaVu faces, sizes 60-110 px, tilt ±12°, blur, JPEG",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scikit-learn": version("scikit-learn"),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "before": before,
        "retrained_without_labels": no_labels,
        "summary": summary,
        "labels_needed": needed,
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
