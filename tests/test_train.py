"Training: learning curves, saved and reloaded taggers, LoRA adapters, quantization, noise augmentation, alignment."
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

from partages.baselines import ScratchSettings
from partages.core import Document, Entity
from partages.frugality import quantize_tagger
from partages.pretrain import PretrainConfig, pretrain, pseudo_perplexity
from partages.splits import make_toy_corpus, split_documents
from partages.tokenclf import (LoraSettings, align_labels, bio_labels, decode_entities, encode_documents, resolve_model,
                               span_scores)
from partages.train import TrainConfig, load_tagger, train_tagger

FRUGALITY_KEYS = {"total_params", "trainable_params", "train_time_s", "peak_rss_mb", "peak_gpu_mb", "tokens_seen",
                  "energy_kwh", "co2_kg"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    "Run this module's training on one thread: two threads on a busy two-core machine spin and run several times slower."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy_split():
    return split_documents(make_toy_corpus(160, seed=0), seed=0, dev=0.1, test=0.2)


def _scratch_config(**kw) -> TrainConfig:
    base = dict(model="scratch-subword", method="full", epochs=5, batch_size=8, learning_rate=5e-3, max_length=64,
                stride=16, track_emissions=False, scratch=ScratchSettings(vocab_size=500))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def scratch_run(toy_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch")
    tagger, record = train_tagger(_scratch_config(), toy_split["train"], toy_split["dev"], out)
    return tagger, record, out


def test_scratch_model_learns_toy_corpus(scratch_run, toy_split):
    "Loss goes down, test entity F1 above 0.9, and the run writes its record, metrics and card."
    tagger, record, out = scratch_run
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"] / 5, history
    f1 = span_scores(toy_split["test"], tagger.predict(toy_split["test"]))["ALL"]["f1"]
    assert f1 > 0.9, f1
    assert FRUGALITY_KEYS <= set(record)
    assert record["trainable_params"] == record["total_params"]
    assert record["tokens_seen"] > 0
    assert json.loads((out / "frugality.json").read_text())["total_params"] == record["total_params"]
    assert "## Scores on the dev set" in (out / "README.md").read_text()


def test_scratch_model_reload_predictions(scratch_run, toy_split):
    tagger, _, out = scratch_run
    again = load_tagger(out)
    assert again.predict(toy_split["test"]) == tagger.predict(toy_split["test"])


def test_training_is_reproducible(toy_split, tmp_path):
    cfg = _scratch_config(epochs=1)
    docs = toy_split["train"][:40]
    a, _ = train_tagger(cfg, docs, [], tmp_path / "a")
    b, _ = train_tagger(cfg, docs, [], tmp_path / "b")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_long_document_windows_merge_back(scratch_run, toy_split):
    "A document ten times longer than a window is tagged as well as its parts."
    tagger, _, _ = scratch_run
    parts = toy_split["test"][:12]
    text, ents = "", []
    for d in parts:
        ents += [Entity(e.start + len(text), e.end + len(text), e.label, e.text, e.concept) for e in d.entities]
        text += d.text + "\n"
    long_doc = Document("long", text, ents)
    assert len(encode_documents([long_doc], tagger.tokenizer, max_length=64, stride=16)) >= 10
    [pred] = tagger.predict([long_doc])
    assert all(text[e.start:e.end] == e.text for e in pred.entities)
    assert span_scores([long_doc], [pred])["ALL"]["f1"] > 0.9


def test_quantized_tagger_close_to_fp32(scratch_run, toy_split, tmp_path):
    tagger, _, _ = scratch_run
    q = quantize_tagger(tagger)
    f1 = span_scores(toy_split["test"], tagger.predict(toy_split["test"]))["ALL"]["f1"]
    f1_q = span_scores(toy_split["test"], q.predict(toy_split["test"]))["ALL"]["f1"]
    assert f1_q > f1 - 0.05, (f1, f1_q)
    q.save(tmp_path / "q")
    assert load_tagger(tmp_path / "q").predict(toy_split["test"][:5]) == q.predict(toy_split["test"][:5])


def test_augmentation_fresh_copies_per_epoch(toy_split, tmp_path):
    seen = []

    def tag_epoch(doc, epoch):
        seen.append((doc.id, epoch))
        return doc if epoch == 0 else Document(doc.id, doc.text.upper(), [
            Entity(e.start, e.end, e.label, e.text.upper(), e.concept) for e in doc.entities])

    docs = toy_split["train"][:20]
    _, _ = train_tagger(_scratch_config(epochs=3), docs, [], tmp_path, augment=tag_epoch)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [h["documents"] for h in history] == [20, 40, 40]
    assert sorted({e for _, e in seen}) == [0, 1, 2]


def test_noise_ops_with_dose_schedule(toy_split, tmp_path):
    pytest.importorskip("partages.noise")
    cfg = _scratch_config(epochs=3, noise_ops={"keyboard": 0.05}, noise_schedule=[0, 1])
    _, _ = train_tagger(cfg, toy_split["train"][:20], [], tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [h["documents"] for h in history] == [20, 40, 40]


def test_minilm_lora_adapter_reload(toy_split, tmp_path):
    "LoRA on the MiniLM: few trainable parameters, learns, and the saved adapter gives identical logits."
    cfg = TrainConfig(model="minilm", method="lora", max_steps=60, batch_size=8, max_length=64, stride=16,
                      learning_rate=5e-3, new_terms=["amlodipine", "furosémide"], lora=LoraSettings(r=8))
    tagger, record = train_tagger(cfg, toy_split["train"], toy_split["dev"][:8], tmp_path)
    assert record["trainable_params"] / record["total_params"] < 0.05
    assert record["energy_kwh"] > 0
    assert record["co2_kg"] > 0
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "frugality.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" not in {p.name for p in tmp_path.iterdir()}
    again = load_tagger(tmp_path)
    enc = again.tokenizer(["Patient sous amlodipine et furosémide, HTA."], return_tensors="pt")
    assert "amlodipine" in again.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    with torch.no_grad():
        assert torch.equal(tagger.model(**enc).logits, again.model(**enc).logits)
    f1 = span_scores(toy_split["test"], again.predict(toy_split["test"]))["ALL"]["f1"]
    assert f1 > 0.9, f1


def test_pretrained_mlm_as_base(toy_split, tmp_path):
    texts = [d.text for d in toy_split["train"]]
    cfg = PretrainConfig(model="minilm", method="lora", max_steps=6, batch_size=8, max_length=48, track_emissions=False,
                         noise_ops={"keyboard": 0.05})
    path, record = pretrain(cfg, texts[:40], tmp_path / "mlm", literature=texts[40:60])
    assert record["trainable_params"] < record["total_params"] / 10
    assert pseudo_perplexity(path, texts[:3], max_tokens=24) > 1
    tagger, _ = train_tagger(TrainConfig(model=str(path), method="lora", max_steps=3, batch_size=8, max_length=48,
                                         stride=8, track_emissions=False), toy_split["train"][:16], [], tmp_path / "ner")
    assert load_tagger(tmp_path / "ner").info["base_model"] == str(path.resolve())


def test_crf_tagger_roundtrip(toy_split, tmp_path):
    tagger, record = train_tagger(TrainConfig(method="crf", track_emissions=False), toy_split["train"], [], tmp_path)
    assert record["trainable_params"] == tagger.num_parameters > 0
    f1 = span_scores(toy_split["test"], load_tagger(tmp_path).predict(toy_split["test"]))["ALL"]["f1"]
    assert f1 > 0.9, f1


WORDS = ["fièvre", "l'IRM", "HTA", "œdème", "pulmonaire", "sous", "amlodipine", "hypertensive", "du", "foie", "(TDM)"]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(resolve_model("minilm"))


@settings(max_examples=50, deadline=None)
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=12), picks=st.lists(st.booleans(), min_size=12, max_size=12),
       labels=st.lists(st.sampled_from(["DISO", "CHEM"]), min_size=12, max_size=12))
def test_alignment_roundtrip_word_boundaries(minilm_tokenizer, words, picks, labels):
    "Entities that start and end on sub-token boundaries come back exactly from their BIO tags."
    text, ents, pos = "", [], 0
    for i, w in enumerate(words):
        if picks[i] and w != "l'IRM": ents.append(Entity(pos, pos + len(w), labels[i], w))
        if picks[i] and w == "l'IRM": ents.append(Entity(pos + 2, pos + 5, labels[i], "IRM"))
        text += w + " "; pos = len(text)
    tags = bio_labels(["DISO", "CHEM"])
    label2id = {t: i for i, t in enumerate(tags)}
    enc = minilm_tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = align_labels(enc["offset_mapping"], ents, label2id, enc["special_tokens_mask"])
    decoded = decode_entities(text, enc["offset_mapping"], [tags[i] if i >= 0 else "O" for i in ids])
    assert [(e.start, e.end, e.label) for e in decoded] == [(e.start, e.end, e.label) for e in ents]
