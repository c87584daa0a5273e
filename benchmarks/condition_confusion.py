"""Where a checkpoint's answers go under the field suite's conditions: the confusion matrix of the
held-out split, clean and under each named condition (severity 2, the suite's own perturbation and
noise seeds), so a drop can be read as "this class's images now go to that class".

    python benchmarks/condition_confusion.py RUN/last.safetensors ../shared/data/chilli \
        --conditions saturation,contrast,wb_cool
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def confusions(checkpoint: str, data: Path, split: str, names: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    import torch

    from clca_edge.core.preprocess import load_rgb
    from clca_edge.robustness.evaluate import perturbed_inputs
    from clca_edge.robustness.suite import conditions
    from clca_edge.training.checkpoint import find_checkpoint, load_checkpoint
    from clca_edge.training.evaluate import eval_samples

    torch.set_num_threads(1)
    model, meta = load_checkpoint(find_checkpoint(checkpoint))
    model.eval()
    conds = conditions("quick", names)
    k = len(meta.class_names)
    out = {n: np.zeros((k, k), np.int64) for n in ["clean"] + [c.name for c in conds]}
    with torch.no_grad():
        for index, (path, label) in enumerate(eval_samples(data, split, meta.class_names, None)):
            rgb = load_rgb(path)
            if rgb is None:
                continue
            x = perturbed_inputs(rgb, meta.preprocess, conds, 0, index)  # the suite's seed 0, as field_real
            for m, p in zip(out.values(), model(torch.from_numpy(x)).argmax(1).tolist()):
                m[label, p] += 1
    return list(meta.class_names), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--conditions", default="saturation,contrast")
    args = ap.parse_args()
    classes, mats = confusions(args.checkpoint, args.data, args.split, args.conditions.split(","))
    for name, m in mats.items():
        print(f"\n{name}: top-1 {100.0 * np.trace(m) / m.sum():.1f}% (rows: true class, columns: predicted)")
        print("| true \\ predicted | " + " | ".join(classes) + " |")
        print("|---" * (len(classes) + 1) + "|")
        for c, row in zip(classes, m):
            print(f"| {c} | " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
