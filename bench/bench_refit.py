"""What refitting on train + valid buys, measured without a test gene.

The validation genes of E116 are split into two seeded halves, V1 and V2. The
chosen run trains on the training genes and chooses its epoch on V1, as `histcli
train` does on the whole validation split; the refit (histcli.training.refit, what
`train` saves by default) then learns from the training genes and V1 for that many
epochs. Both are scored on V2, which neither saw: the difference estimates the
refit's gain with half as many added genes as a real refit adds. No test gene is
read.

Usage: python bench/bench_refit.py [--arch cnn] [--task classification] [--seed 0] [--threads 1]
(the CNN: about 10 minutes of one core; the CRNN: about an hour)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import prepare  # noqa: E402

from histcli import tasks, training  # noqa: E402
from histcli.metrics import pearson, roc_auc  # noqa: E402
from histcli.store import SPLIT_CODES, Store  # noqa: E402


def v2_score(result, cell, task_name: str) -> float:
    """The saved weights' metric on the cell's valid split (V2 here), as evaluate computes it."""
    import torch

    from histcli import models

    inputs, targets = training.split_arrays(cell, "valid", result.settings.transform, result.settings.task)
    module = models.get(result.settings.architecture).build(inputs.shape[1], inputs.shape[2],
                                                           result.settings.hyperparameters)
    module.load_state_dict(result.state)
    outputs = training.predict_logits(module, torch.from_numpy(inputs), mirror=result.settings.mirror)
    outputs = outputs.float().numpy()
    return pearson(targets, outputs) if task_name == "regression" else roc_auc(targets.astype(np.int8), outputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--task", default="classification", choices=tasks.TASK_NAMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the store here (and reuse it)")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="histcli-refit-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "store.h5").exists():
        prepare({"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")})
    cell = Store(folder / "store.h5").load("E116")

    valid = np.flatnonzero(cell.split_mask("valid"))
    v1 = np.random.default_rng(12345).choice(valid, len(valid) // 2, replace=False)
    halves = cell.split.copy()
    halves[cell.split_mask("test")] = SPLIT_CODES["none"]  # never read
    halves[valid] = SPLIT_CODES["test"]  # V2: scored at the end only
    halves[v1] = SPLIT_CODES["valid"]
    chosen_on_v1 = dataclasses.replace(cell, split=halves)
    scored_on_v2 = dataclasses.replace(cell, split=np.where(halves == SPLIT_CODES["valid"], SPLIT_CODES["none"],
                                                            np.where(halves == SPLIT_CODES["test"],
                                                                     SPLIT_CODES["valid"], halves)))

    settings = training.settings_for(options.arch, seed=options.seed, threads=options.threads, mirror=True,
                                     task=tasks.make_task(options.task))
    chosen = training.train(chosen_on_v1, settings)
    refit = training.refit(chosen_on_v1, chosen)
    metric = "Pearson r" if options.task == "regression" else "AUC"
    before, after = v2_score(chosen, scored_on_v2, options.task), v2_score(refit, scored_on_v2, options.task)
    print(f"E116 {options.arch} {options.task} seed {options.seed}: best epoch {chosen.best_epoch} of "
          f"{chosen.epochs_run} on V1 ({metric} {chosen.best_valid_score:.4f}); V2 {metric}: chosen {before:.4f}, "
          f"refit on train + V1 ({refit.refit.genes} genes) {after:.4f}, gain {after - before:+.4f}; "
          f"{chosen.seconds:.0f} s + {refit.refit.seconds:.0f} s")


if __name__ == "__main__":
    main()
