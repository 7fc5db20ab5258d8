"""Dev F1 and size of the bundled model's word table pruned to several sizes.

    python training/build_pretrained.py        # leaves the full model in runs/build-clinical/full
    python -m benchmarks.pretrained_pruning [--full runs/build-clinical/full] [--words 6557 20000 ...]

Prunes the same trained model as the build does (training/build_pretrained.py's
``prune_words``) and prints, for each size, the dev exact micro F1 on
../shared/data/maccrobat-i2b2/dev and the size of the saved ``model.keras``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "training"))

from build_pretrained import dev_f1, prune_words, save_reproducibly  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", type=Path, default=Path("runs/build-clinical/full"))
    parser.add_argument("--words", type=int, nargs="+",
                        default=[15_000, 20_000, 30_000, 40_000, 50_000])
    args = parser.parse_args()
    os.chdir(REPO)
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    full = KerasAnnotator.load(args.full)
    print("rows kept\tmodel.keras bytes\tdev exact micro F1")
    with tempfile.TemporaryDirectory() as scratch:
        for words in [full.model.trainable_word_rows, *args.words, len(full.vocab.words)]:
            pruned = prune_words(full, words)
            path = Path(scratch) / f"{words}.keras"
            save_reproducibly(pruned.model, path)
            print(f"{len(pruned.vocab.words)}\t{path.stat().st_size}\t{dev_f1(pruned):.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
