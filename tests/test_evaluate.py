"""Tests of `partages.evaluate` that the notebook cannot express: agreement with seqeval on many random documents,
the bootstrap against scipy, and the real noise, corpus and training modules wired together."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings, strategies as st
from scipy.stats import bootstrap
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2, Entities

from fixtures.evaluation import build_eval_sets, make_docs
from partages.cli import main
from partages.core import Document, Entity, validate_document, write_jsonl
from partages.evaluate import (EvaluationError, LexiconTagger, evaluate_tagger, load_results, robustness_summary,
                               robustness_sweep, score_documents, to_bio, _match_lenient)


def annotate(doc_id, text, *mentions):
    "A checked document whose mentions are `surface/LABEL` strings found left to right in `text`."
    ents, pos = [], 0
    for m in mentions:
        surface, label = m.rsplit("/", 1)
        i = text.index(surface, pos)
        ents.append(Entity(i, i + len(surface), label, surface))
        pos = i + 1
    return validate_document(Document(doc_id, text, sorted(ents, key=lambda e: (e.start, e.end))))


def seqeval_counts(gold, pred):
    "Per type (tp, predicted, gold) as seqeval's strict IOB2 mode counts them."
    et, ep = Entities([to_bio(d)[1] for d in gold], IOB2), Entities([to_bio(d)[1] for d in pred], IOB2)
    return {t: (len(et.filter(t) & ep.filter(t)), len(ep.filter(t)), len(et.filter(t)))
            for t in et.unique_tags | ep.unique_tags}


def assert_matches_seqeval(gold, pred):
    "Our strict counts and scores equal seqeval's on `gold` and `pred` (flat, token-aligned mentions)."
    labels = sorted({e.label for d in gold + pred for e in d.entities})
    if not labels: return
    ours = score_documents(gold, pred, labels=labels, n_boot=0).query("mode == 'strict'").set_index("label")
    for label, (tp, npred, ngold) in seqeval_counts(gold, pred).items():
        assert ours.loc[label, "tp"] == tp, label
        assert ours.loc[label, "tp"] + ours.loc[label, "fp"] == npred, label
        assert ours.loc[label, "support"] == ngold, label
    yt, yp = [to_bio(d)[1] for d in gold], [to_bio(d)[1] for d in pred]
    for col, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert ours.loc["ALL", col] == pytest.approx(fn(yt, yp, mode="strict", scheme=IOB2, zero_division=0))
        assert ours.loc["MACRO", col] == pytest.approx(fn(yt, yp, mode="strict", scheme=IOB2, average="macro", zero_division=0))


SENTENCES = [
    # exact matches, a boundary error and a label error
    ("Insuffisance cardiaque gauche traitée par furosémide .",
     ["Insuffisance cardiaque gauche/DISO", "furosémide/CHEM"],
     ["Insuffisance cardiaque/DISO", "furosémide/DISO"]),
    # adjacent mentions of the same label stay two mentions
    ("Douleur abdominale fièvre frissons depuis hier .",
     ["Douleur abdominale/DISO", "fièvre/DISO", "frissons/DISO"],
     ["Douleur abdominale fièvre/DISO", "frissons/DISO"]),
    # nothing predicted
    ("Scanner thoracique : nodule du lobe supérieur droit .",
     ["Scanner thoracique/PROC", "nodule/DISO", "lobe supérieur droit/ANAT"], []),
    # only spurious predictions
    ("Patient de 54 ans , sans antécédent .", [], ["Patient/ANAT", "antécédent/DISO"]),
    # everything right
    ("Échographie du rein gauche sous amlodipine .",
     ["Échographie/PROC", "rein gauche/ANAT", "amlodipine/CHEM"],
     ["Échographie/PROC", "rein gauche/ANAT", "amlodipine/CHEM"]),
]


@pytest.mark.parametrize("text,gold,pred", SENTENCES)
def test_strict_equals_seqeval_sentence(text, gold, pred):
    assert_matches_seqeval([annotate("s", text, *gold)], [annotate("s", text, *pred)])


def test_strict_equals_seqeval_corpus():
    gold = [annotate(f"s{i}", t, *g) for i, (t, g, _) in enumerate(SENTENCES)]
    pred = [annotate(f"s{i}", t, *p) for i, (t, _, p) in enumerate(SENTENCES)]
    assert_matches_seqeval(gold, pred)


WORDS = ["le", "patient", "présente", "une", "fièvre", "sous", "amoxicilline", "et", "douleur", "du", "genou", ";", "."]


@st.composite
def token_docs(draw):
    "A gold and a predicted document over the same words, with random flat token-aligned mentions."
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25))
    text = " ".join(words)
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).tolist()

    def mentions():
        ents, i = [], 0
        while i < len(words):
            if draw(st.booleans()):
                n = draw(st.integers(1, min(3, len(words) - i)))
                s, e = starts[i], starts[i + n - 1] + len(words[i + n - 1])
                ents.append(Entity(s, e, draw(st.sampled_from(["DISO", "CHEM", "ANAT"])), text[s:e]))
                i += n + draw(st.integers(0, 1))  # 0: the next mention may start right after this one
            else:
                i += 1
        return ents

    return Document("d", text, mentions()), Document("d", text, mentions())


@settings(max_examples=150, deadline=None)
@given(st.lists(token_docs(), min_size=1, max_size=4))
def test_strict_equals_seqeval_random(pairs):
    gold = [Document(f"d{i}", g.text, g.entities) for i, (g, _) in enumerate(pairs)]
    pred = [Document(f"d{i}", p.text, p.entities) for i, (_, p) in enumerate(pairs)]
    assert_matches_seqeval(gold, pred)


LENIENT_CASES = [
    # (gold spans, predicted spans, matched pairs)
    ([(0, 10), (11, 20)], [(5, 15)], 1),  # one prediction over two gold mentions: one match, one miss
    ([(0, 20)], [(0, 5), (10, 15)], 1),  # two predictions inside one mention: one match, one false positive
    ([(0, 5)], [(5, 9)], 0),  # touching is not overlapping
    ([(0, 10), (12, 14)], [(0, 13), (8, 10)], 2),  # the assignment with most pairs wins over greedy
    ([(0, 4), (0, 4)], [(0, 4)], 1),  # duplicates match once
]


@pytest.mark.parametrize("gold,pred,pairs", LENIENT_CASES)
def test_lenient_matching_one_to_one(gold, pred, pairs):
    n, hit = _match_lenient(gold, pred)
    assert n == pairs
    assert sum(hit) == pairs


def test_lenient_ignores_other_labels():
    text = "Cancer du sein gauche ."
    gold = [annotate("a", text, "Cancer du sein gauche/DISO")]
    pred = [annotate("a", text, "sein gauche/ANAT")]
    sc = score_documents(gold, pred, labels=["DISO", "ANAT"], n_boot=0).set_index(["mode", "label"])
    assert sc.loc[("lenient", "ALL"), "tp"] == 0
    assert sc.loc[("lenient", "ALL"), "fp"] == 1


def test_bootstrap_matches_scipy_percentile():
    train, sets, _ = build_eval_sets(0)
    gold = sets["synthetic_test"]
    pred = LexiconTagger.from_documents(train[:8]).predict(gold)
    ours = score_documents(gold, pred, n_boot=4000, seed=3).query("label == 'ALL' and mode == 'strict'").iloc[0]
    per_doc = np.array([score_documents([g], [p], labels=["DISO", "CHEM", "PROC", "ANAT"], n_boot=0)
                        .query("label == 'ALL' and mode == 'strict'")[["tp", "fp", "fn"]].iloc[0] for g, p in zip(gold, pred)])

    def micro_f1(idx, axis=-1):
        c = per_doc[np.asarray(idx, dtype=int)].sum(axis=-2)
        return 2 * c[..., 0] / (2 * c[..., 0] + c[..., 1] + c[..., 2])

    ref = bootstrap((np.arange(len(gold)),), micro_f1, n_resamples=4000, method="percentile", vectorized=True,
                    rng=np.random.default_rng(0)).confidence_interval
    assert ours["f1_low"] == pytest.approx(ref.low, abs=0.01)
    assert ours["f1_high"] == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_seeded_and_narrows():
    train, sets, _ = build_eval_sets(0)
    tagger = LexiconTagger.from_documents(train[:8])
    small = make_docs(25, 1, "small")
    large = make_docs(400, 1, "large")
    width = {}
    for name, docs in (("small", small), ("large", large)):
        sc = score_documents(docs, tagger.predict(docs), n_boot=1000, seed=5)
        again = score_documents(docs, tagger.predict(docs), n_boot=1000, seed=5)
        pd.testing.assert_frame_equal(sc, again)
        row = sc.query("label == 'ALL' and mode == 'strict'").iloc[0]
        assert row["f1_low"] < row["f1"] < row["f1_high"]
        width[name] = row["f1_high"] - row["f1_low"]
    other = score_documents(small, tagger.predict(small), n_boot=1000, seed=6)
    assert not other["f1_low"].equals(score_documents(small, tagger.predict(small), n_boot=1000, seed=5)["f1_low"])
    # 16 times more documents: the interval should be about 4 times narrower
    assert 2.5 < width["small"] / width["large"] < 6.5


def test_score_rejects_misaligned_predictions():
    gold = make_docs(3, 0, "g")
    pred = LexiconTagger({}).predict(gold)
    with pytest.raises(EvaluationError, match="no prediction for document 'g-002'"):
        score_documents(gold, pred[:2])
    with pytest.raises(EvaluationError, match="predictions for unknown documents"):
        score_documents(gold[:2], pred)
    with pytest.raises(EvaluationError, match="appears twice"):
        score_documents(gold, pred + pred[:1])


def test_auc_ratio_reference_curves():
    base = dict(model="m", eval_set="s", label="ALL", mode="strict")
    flat = pd.DataFrame([dict(base, noise_op="flat", dose=d, f1=0.8) for d in (0, 0.1, 0.2, 0.4)])
    linear = pd.DataFrame([dict(base, noise_op="linear", dose=d, f1=0.8 * (1 - d / 0.4)) for d in (0, 0.1, 0.2, 0.4)])
    rs = robustness_summary(pd.concat([flat, linear])).set_index("noise_op")
    assert rs.loc["flat", "auc_ratio"] == pytest.approx(1.0)
    assert rs.loc["linear", "auc_ratio"] == pytest.approx(0.5)
    assert rs.loc["linear", "f1_kept_0.2"] == pytest.approx(0.5)


def test_sweep_with_real_noise():
    train, sets, _ = build_eval_sets(0)
    docs = sets["synthetic_test"][:12]
    tagger = LexiconTagger.from_documents(train)
    sw = robustness_sweep(tagger, docs, ["keyboard", "uppercase", "unseen_drug"], [0, 0.1, 0.5], seed=2, n_boot=50)
    f1 = sw.query("label == 'ALL' and mode == 'strict'").set_index(["noise_op", "dose"])["f1"]
    clean = f1.loc[("keyboard", 0.0)]
    assert f1.loc[("uppercase", 0.0)] == clean  # dose 0 rows are the clean scores
    assert f1.loc[("keyboard", 0.5)] < clean
    assert f1.loc[("unseen_drug", 0.5)] < clean  # invented drug names are not in the lexicon
    novel = sw.query("label == 'NOVEL' and mode == 'strict' and noise_op == 'unseen_drug'")
    assert len(novel) and (novel["recall"] == 0).all()
    with pytest.raises(EvaluationError, match="unknown noise operations"):
        robustness_sweep(tagger, docs, ["typos"], [0, 0.1])


def test_evaluate_tagger_per_set_labels():
    train, sets, labels = build_eval_sets(0)
    scores = evaluate_tagger(LexiconTagger.from_documents(train), sets, labels, None, seed=0, n_boot=20)
    real = set(scores.query("eval_set == 'real'")["label"])
    assert real == {"DISO", "ANAT", "ALL", "MACRO"}
    kinds = scores.groupby("eval_set")["eval_kind"].first().to_dict()
    assert kinds == {"synthetic_test": "synthetic", "unseen": "synthetic", "real": "real"}
    assert "NOVEL" in set(scores.query("eval_set == 'unseen'")["label"])


@pytest.mark.slow
def test_cli_config_with_crf_and_noise(tmp_path, capsys):
    from partages.train import TrainConfig, train_tagger
    train, sets, _ = build_eval_sets(0)
    train_tagger(TrainConfig(method="crf", track_emissions=False, name="crf"), train, [], tmp_path / "crf")
    LexiconTagger.from_documents(train, name="lexicon").save(tmp_path / "lexicon")
    write_jsonl(sets["synthetic_test"][:15], tmp_path / "test.jsonl")
    write_jsonl(sets["real"][:15], tmp_path / "real.jsonl")
    config = dict(models=[str(tmp_path / "crf"), str(tmp_path / "lexicon")],
                  eval_sets=dict(test=dict(source=str(tmp_path / "test.jsonl")),
                                 real=dict(source=str(tmp_path / "real.jsonl"), labels=["DISO", "ANAT"], kind="real")),
                  noise=dict(ops=["keyboard", "accents"], doses=[0, 0.05, 0.2], eval_sets=["test"]), n_boot=50, seed=1)
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "crf" in out and "lexicon" in out
    res = load_results(tmp_path / "run")
    assert set(res.scores["model"]) == {"crf", "lexicon"}
    assert set(res.robustness["noise_op"]) == {"keyboard", "accents"}
    fr = res.frugality.set_index("model")
    assert fr.loc["crf", "total_params"] > 0 and fr.loc["crf", "inference_docs_per_s"] > 0
    assert np.isnan(fr.loc["lexicon", "total_params"])  # no frugality.json in its folder
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "completed"
    first = (tmp_path / "run" / "results" / "scores.csv").read_bytes()
    assert main(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--out", str(tmp_path / "run2")]) == 0
    assert (tmp_path / "run2" / "results" / "scores.csv").read_bytes() == first


def test_cli_errors(tmp_path, capsys):
    write_jsonl(make_docs(3, 0, "d"), tmp_path / "c.jsonl")
    LexiconTagger({"fièvre": "DISO"}).save(tmp_path / "lex")
    (tmp_path / "eval.yaml").write_text("models: []\n")
    assert main(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--model", str(tmp_path / "lex")]) == 1
    assert "cannot be combined" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "lex")]) == 1
    assert "--model PATH and --corpus PATH" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--corpus", str(tmp_path / "c.jsonl"),
                 "--out", str(tmp_path / "run")]) == 1
    assert "nope: model folder not found" in capsys.readouterr().err
    (tmp_path / "eval.yaml").write_text("n_boot: -1\n")
    assert main(["evaluate", "--config", str(tmp_path / "eval.yaml")]) == 1
    assert "n_boot" in capsys.readouterr().err


def test_cli_labels_and_label_map(tmp_path, capsys):
    docs = make_docs(6, 0, "d")
    write_jsonl(docs, tmp_path / "c.jsonl")
    LexiconTagger.from_documents(docs, name="lex").save(tmp_path / "lex")
    assert main(["evaluate", "--model", str(tmp_path / "lex"), "--corpus", str(tmp_path / "c.jsonl"), "--labels", "DISO,ANAT",
                 "--n-boot", "10", "--out", str(tmp_path / "run")]) == 0
    labels = set(load_results(tmp_path / "run").scores["label"])
    assert labels == {"DISO", "ANAT", "ALL", "MACRO"}
    (tmp_path / "map.yaml").write_text("DISO: DISO\nCHEM: null\nPROC: null\nANAT: null\n")
    assert main(["evaluate", "--model", str(tmp_path / "lex"), "--corpus", str(tmp_path / "c.jsonl"), "--label-map",
                 str(tmp_path / "map.yaml"), "--n-boot", "10", "--out", str(tmp_path / "run2")]) == 0
    assert set(load_results(tmp_path / "run2").scores["label"]) == {"DISO", "ALL", "MACRO"}


@pytest.mark.slow
def test_e3c_test_split(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARTAGES_MIRROR", str(mirror))
    from partages.corpora import load_corpus
    LexiconTagger.from_documents(load_corpus("e3c", split="train"), name="e3c-lexicon", ignore_case=True).save(tmp_path / "lex")
    config = dict(models=[str(tmp_path / "lex")], eval_sets=dict(e3c=dict(source="e3c", options=dict(split="test"))), n_boot=100)
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--out", str(tmp_path / "run")]) == 0
    sc = load_results(tmp_path / "run").scores
    assert set(sc["label"]) == {"DISO", "ANAT", "ALL", "MACRO"}  # E3C annotates only these two labels
    assert set(sc["eval_kind"]) == {"real"}
    row = sc.query("label == 'ALL' and mode == 'strict'").iloc[0]
    assert row["n_docs"] == 45
    assert 0 < row["f1"] < 1 and row["f1_low"] < row["f1"] < row["f1_high"]


def test_cli_novel_reference(tmp_path):
    train, sets, _ = build_eval_sets(0)
    write_jsonl(train[:10], tmp_path / "train.jsonl")
    write_jsonl(sets["real"], tmp_path / "real.jsonl")
    LexiconTagger.from_documents(train[:10], name="lex").save(tmp_path / "lex")
    config = dict(models=[str(tmp_path / "lex")], n_boot=20,
                  eval_sets=dict(real=dict(source=str(tmp_path / "real.jsonl"), novel_reference=str(tmp_path / "train.jsonl"))))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--out", str(tmp_path / "run")]) == 0
    novel = load_results(tmp_path / "run").scores.query("label == 'NOVEL' and mode == 'strict'").iloc[0]
    assert novel["support"] > 0
    assert novel["recall"] == 0  # a lexicon cannot find what it never saw
