"""Throughput of every noise operation, and of `keyboard` against nlpaug's French `KeyboardAug`, in one run.

Usage: python benchmarks/bench_noise.py [--corpus demo|e3c] [--docs 500] [--repeat 7] [--seed 0] [--keyboard-only]

Corpus: `partages.noise.demo_corpus` (short French clinical documents with DISO/CHEM/PROC/ANAT entities),
or E3C French layer 1 (81 clinical cases, read from the mirror set in `PARTAGES_MIRROR`).
For each operation it prints documents per second (best of `--repeat` runs, after a warm-up that loads
the lexicons) and the realised rate against the dose. Then it runs `keyboard` and nlpaug's
`KeyboardAug(lang="fr")`, which uses the AZERTY keyboard model shipped with nlpaug, on the same texts,
at its default rates and at lower ones. It prints each throughput (best and median of `--repeat`
rounds, and the spread), the ratios and every character error rate. nlpaug edits plain strings, so
it keeps no span at all.

Timing is made fair to both sides: every contestant is warmed up first, then `gc.freeze()` moves the
objects loaded so far (lexicons, corpus, nlpaug's model) out of the collector's reach, so a full
collection costs the same in every contestant's run. Each round runs every contestant once, in an order
that alternates between rounds, after an untimed `gc.collect()`, so load from other processes and
collector state hit all of them alike.
"""
import argparse
import gc
import statistics
import time

from rapidfuzz.distance import Levenshtein

from partages.core import validate_document
from partages.noise import OPERATIONS, demo_corpus, noise_corpus, realised_rate

DOSES = {"keyboard": 0.05, "accents": 0.2, "uppercase": 0.5, "casing": 0.1, "phonetic": 0.1, "abbreviation": 0.3,
         "dictation": 0.1, "ocr": 0.03, "telegraphic": 0.3, "spacing": 0.1, "unseen_drug": 0.3, "unseen_disorder": 0.3}


def best_time(fn, repeat):
    "Smallest wall-clock time of `repeat` calls of `fn`, and the last result."
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def interleaved_times(contestants, repeat):
    "Wall-clock times of `repeat` rounds of every function in `contestants` (name -> function), and the last result of each."
    times, results = {name: [] for name in contestants}, {}
    names = list(contestants)
    for r in range(repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            results.pop(name, None)
            gc.collect()
            t0 = time.perf_counter()
            results[name] = contestants[name]()
            times[name].append(time.perf_counter() - t0)
    return times, results


def corpus_cer(noisy_texts, clean_texts):
    return sum(Levenshtein.distance(n, c) for n, c in zip(noisy_texts, clean_texts)) / sum(map(len, clean_texts))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", choices=("demo", "e3c"), default="demo", help="generated demo documents, or E3C French layer 1")
    p.add_argument("--docs", type=int, default=500, help="documents in the demo corpus")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per measure (rounds for the comparison with nlpaug)")
    p.add_argument("--keyboard-only", action="store_true", help="skip the table of every operation; time only keyboard against nlpaug")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus and of the noise")
    args = p.parse_args()

    if args.corpus == "e3c":
        from partages.corpora import load_e3c
        docs = load_e3c(layer=1)
    else: docs = demo_corpus(args.docs, seed=args.seed)
    chars = sum(len(d.text) for d in docs)
    print(f"corpus: {len(docs)} {args.corpus} documents, {chars:,} characters, {sum(len(d.entities) for d in docs):,} entities")
    noise_corpus(docs[:5], DOSES, seed=args.seed)  # warm-up: lexicons, inventory, CIM-10

    if not args.keyboard_only:
        print(f"\n{'operation':16} {'dose':>6} {'realised':>9} {'docs/s':>10}  spans kept")
        for name in OPERATIONS:
            dose = DOSES[name]
            t, noisy = best_time(lambda: noise_corpus(docs, {name: dose}, seed=args.seed), args.repeat)
            spans_kept = all(validate_document(d, labels=None) and len(d.entities) == len(c.entities) for d, c in zip(noisy, docs))
            print(f"{name:16} {dose:6.2f} {realised_rate(name, docs, noisy):9.4f} {len(docs) / t:10,.0f}  {spans_kept}")

    import nlpaug.augmenter.char as nac
    texts = [d.text for d in docs]
    dose = DOSES["keyboard"]
    aug = nac.KeyboardAug(lang="fr")
    aug_low = nac.KeyboardAug(lang="fr", aug_char_p=0.1, aug_word_p=0.2)
    contestants = {f"partages keyboard, dose {dose}, every span kept": lambda: noise_corpus(docs, {"keyboard": dose}, seed=args.seed),
                   "nlpaug KeyboardAug(lang='fr') defaults, no spans": lambda: aug.augment(texts),
                   "nlpaug KeyboardAug(lang='fr', aug_char_p=0.1, aug_word_p=0.2), no spans": lambda: aug_low.augment(texts)}
    for run in contestants.values(): run()  # warm-up, before freezing what it loaded
    gc.collect()
    gc.freeze()
    times, results = interleaved_times(contestants, args.repeat)
    gc.unfreeze()
    print(f"\nkeyboard against nlpaug, {args.repeat} interleaved rounds (docs/s: best, median, slowest)")
    speed = {}
    for name, ts in times.items():
        out = results[name]
        noisy = [d.text for d in out] if name.startswith("partages") else out
        speed[name] = (len(docs) / min(ts), len(docs) / statistics.median(ts), len(docs) / max(ts))
        best, median, slowest = speed[name]
        print(f"  {name}: {best:,.0f} / {median:,.0f} / {slowest:,.0f} docs/s, CER {corpus_cer(noisy, texts):.4f}")
    ours, default, low = speed.values()
    print(f"ratio partages / nlpaug defaults: {ours[0] / default[0]:.2f}x (best), {ours[1] / default[1]:.2f}x (median)")
    print(f"ratio partages / nlpaug lower rates: {ours[0] / low[0]:.2f}x (best), {ours[1] / low[1]:.2f}x (median)")


if __name__ == "__main__":
    main()
