"""Benchmark of the training stage: training speed and memory, LoRA against full fine-tuning on the MiniLM,
and inference speed and entity F1 of every model kind, on the toy corpus of `partages.splits`.

Each model trains in its own subprocess, so that peak memory (RSS) is that model's alone. Speeds are
printed with their ratio to full fine-tuning of the MiniLM in float32, measured in the same run.

    python benchmarks/bench_train.py [--docs 300] [--steps 60] [--threads N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ["minilm-full", "minilm-lora", "scratch-subword", "scratch-char", "crf"]


def run_one(kind: str, docs_n: int, steps: int, scratch_steps: int) -> list[dict]:
    "Train the model `kind` on the toy corpus, then time its inference; one row per tagger (int8 copies included)."
    from partages.baselines import ScratchSettings
    from partages.frugality import measure_inference, quantize_tagger
    from partages.splits import make_toy_corpus, split_documents
    from partages.tokenclf import span_scores
    from partages.train import TrainConfig, train_tagger

    sp = split_documents(make_toy_corpus(docs_n, seed=0), seed=0, dev=0.1, test=0.2)
    common = dict(max_steps=steps, batch_size=8, stride=16, track_emissions=True)
    configs = {
        "minilm-full": dict(model="minilm", method="full", max_length=128, learning_rate=1e-4, **common),
        "minilm-lora": dict(model="minilm", method="lora", max_length=128, learning_rate=5e-3, **common),
        "scratch-subword": dict(model="scratch-subword", method="full", max_length=128, learning_rate=5e-3,
                                scratch=ScratchSettings(vocab_size=1000), **{**common, "max_steps": scratch_steps}),
        "scratch-char": dict(model="scratch-char", method="full", max_length=256, learning_rate=3e-3,
                             **{**common, "max_steps": scratch_steps}),
        "crf": dict(method="crf", track_emissions=True),
    }
    with tempfile.TemporaryDirectory() as d:
        tagger, rec = train_tagger(TrainConfig(**configs[kind]), sp["train"], [], d)
        history = json.loads((Path(d) / "metrics.json").read_text())["history"]
    steps_done = sum(h["steps"] for h in history)
    loop_s = sum(h["seconds"] for h in history)
    rows = [dict(model=kind, trainable=rec["trainable_params"], total=rec["total_params"],
                 steps_per_s=steps_done / loop_s if loop_s else None, train_s=rec["train_time_s"],
                 peak_rss_mb=rec["peak_rss_mb"], energy_kwh=rec["energy_kwh"], tokens_seen=rec["tokens_seen"])]
    taggers = [(kind, tagger)] + ([(f"{kind}-int8", quantize_tagger(tagger))] if kind.startswith("minilm") else [])
    for name, t in taggers:
        m = measure_inference(t, sp["test"])
        row = rows[0] if name == kind else dict(model=name)
        row.update(docs_per_s=m["inference_docs_per_s"], f1=span_scores(sp["test"], m["predictions"])["ALL"]["f1"])
        if name != kind: rows.append(row)
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    ref = next(r for r in rows if r["model"] == "minilm-full")
    head = ("model", "trainable", "ratio", "steps/s", "x ref", "train s", "peak RSS MB", "energy kWh", "test F1", "docs/s", "x ref")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        ratio = r["trainable"] / r["total"] if r.get("total") else None
        sps = r.get("steps_per_s")
        print(" | ".join([r["model"], _fmt(r.get("trainable"), ","), _fmt(ratio, ".2%"), _fmt(sps, ".2f"),
                          _fmt(sps / ref["steps_per_s"] if sps and r["model"] != "crf" else None, ".2f"),
                          _fmt(r.get("train_s"), ".1f"), _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(r.get("energy_kwh"), ".2e"),
                          _fmt(r["f1"], ".3f"), _fmt(r["docs_per_s"], ".1f"), _fmt(r["docs_per_s"] / ref["docs_per_s"], ".2f")]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=300, help="toy documents (70%% train, 20%% test)")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps of the MiniLM models")
    p.add_argument("--scratch-steps", type=int, default=600,
                   help="optimizer steps of the models trained from scratch (the character model needs hundreds)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's choice)")
    p.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS, help="models to run; minilm-full is the reference")
    p.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(args.one, args.docs, args.steps, args.scratch_steps)))
        return 0

    kinds = ["minilm-full"] + [k for k in args.kinds if k != "minilm-full"]
    env = dict(os.environ, PARTAGES_PROGRESS="0")
    rows, t0 = [], time.perf_counter()
    for kind in kinds:
        cmd = [sys.executable, __file__, "--one", kind, "--docs", str(args.docs), "--steps", str(args.steps),
               "--scratch-steps", str(args.scratch_steps)]
        if args.threads: cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        rows += json.loads(out.stdout.strip().splitlines()[-1])

    import torch
    print(f"toy corpus: {args.docs:,} documents; batches of 8, {args.steps} steps (MiniLM), {args.scratch_steps} steps (scratch); "
          f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{time.perf_counter() - t0:.0f} s in all\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
