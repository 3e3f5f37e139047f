"""Choose classification's neighbour-vote weight on training titles held out of the vote, never on the rows
`facet eval classify` measures (docs/benchmarks.md, "Classification: the labelled titles vote").

    python scripts/tune_vote.py --adapter engine/shipped/classify

Two tuning sets: 200 PriceRunner titles of the training side (a seeded sample by product cluster, seed 1, from the
titles left after the 200 that `facet eval classify --limit 200 --seed 0` scores) and 150 OA-Mine training titles
(seed 1). For each, the shipped labelled titles less that set (and, for PriceRunner, its clusters) vote; every weight
is scored over the same model answers (each level's choice log-likelihoods are computed once and reused), and the
accuracy per weight is printed, on Shopify paths (a prediction under a gold node that is not a leaf counts).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


class Cached:
    """A scoring backend that scores each (prompt, answer, adapter) once: the weights differ only in a few levels."""

    def __init__(self, backend):
        self.backend, self.cache = backend, {}

    def score(self, requests):
        keys = [(json.dumps(r.prompt), r.continuation, r.adapter) for r in requests]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            for i, lp in zip(missing, self.backend.score([requests[i] for i in missing]), strict=True):
                self.cache[keys[i]] = lp
        return [self.cache[k] for k in keys]

    def generate(self, requests):
        return self.backend.generate(requests)


def main() -> None:
    from engine.adapters import SHIPPED_LABELLED
    from engine.api import Engine
    from eval.datasets import split_by_group, within_gold
    from finetune.default import classify_rows
    from prompts.neighbours import NeighbourVote, read_labelled
    from prompts.tasks.classify import classify_many

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--adapter", default="default", help="classification adapter (default: the shipped one)")
    ap.add_argument("--neighbours", default=str(SHIPPED_LABELLED), help="labelled titles (default: the shipped ones)")
    ap.add_argument("--weights", default="0,0.3,0.5,0.7,0.9")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    _held, rest, oa = classify_rows(Path(args.data))
    pricerunner, _ = split_by_group(rest, 200, 1)
    sets = {"PriceRunner (200 training titles)": (pricerunner, [r.group for r in pricerunner]),
            "OA-Mine (150 training titles)": (random.Random(1).sample(oa, 150), [])}
    labelled = read_labelled(args.neighbours)
    eng = Engine(adapters={"classify": args.adapter} if args.adapter != "default" else None, threads=args.threads)
    backend = Cached(eng.backend)
    weights = [float(w) for w in args.weights.split(",")]
    for name, (rows, groups) in sets.items():
        held, clusters = {r.product.title.casefold() for r in rows}, set(groups)
        vote = NeighbourVote([t for t in labelled if t.title.casefold() not in held and t.group not in clusters])
        line = []
        for w in weights:
            task = eng.task("classify", shots=0, neighbours=vote, vote_weight=w)
            results = classify_many(backend, task, [r.product for r in rows])
            right = sum(r.ok and within_gold(g.path, tuple(r.path)) == g.path for g, r in zip(rows, results, strict=True))
            line.append(f"{w:g}: {right / len(rows):.3f}")
        print(f"{name}, {len(vote.rows)} titles voting:  " + "  ".join(line), flush=True)


if __name__ == "__main__":
    main()
