"Property tests of the document splits: partitions, determinism, and no held-out concept in training."
from hypothesis import given, settings, strategies as st

from partages.core import Document, Entity
from partages.splits import choose_held_out, concept_key, make_toy_corpus, split_documents, unseen_concept_split

CONCEPTS = [("fièvre", "R50"), ("HTA", "I10"), ("hypertension artérielle", "I10"), ("foie", None),
            ("Foie", None), ("amlodipine", "C08CA01"), ("IRM", None), ("toux", "R05")]


def _make_doc(i: int, picks: list[int]) -> Document:
    "A document mentioning the concepts of `CONCEPTS` at indices `picks`, one per line."
    text, ents = "", []
    for p in picks:
        mention, code = CONCEPTS[p]
        ents.append(Entity(len(text), len(text) + len(mention), "DISO", mention, code))
        text += mention + "\n"
    return Document(f"d{i}", text or "rien", ents)


corpora = st.lists(st.lists(st.integers(0, len(CONCEPTS) - 1), max_size=4), min_size=1, max_size=30).map(
    lambda docs: [_make_doc(i, picks) for i, picks in enumerate(docs)])


@settings(max_examples=60, deadline=None)
@given(docs=corpora, seed=st.integers(0, 2**32), fraction=st.sampled_from([0.1, 0.3, 0.5]))
def test_unseen_split_excludes_held_out(docs, seed, fraction):
    "No train, dev or test document mentions a held-out concept; every unseen document mentions one."
    if not any(d.entities for d in docs): return
    out = unseen_concept_split(docs, seed, held_out=fraction)
    ids = sorted(d.id for part in out.values() for d in part)
    assert ids == sorted(d.id for d in docs)
    held_out = choose_held_out(docs, seed, fraction)
    assert held_out
    for k in ("train", "dev", "test"):
        assert not any(concept_key(e) in held_out for d in out[k] for e in d.entities), k
    for d in out["unseen"]:
        assert any(concept_key(e) in held_out for e in d.entities), d.id


@settings(max_examples=60, deadline=None)
@given(docs=corpora, seed=st.integers(0, 2**32), held=st.sets(st.sampled_from(["R50", "I10", "foie", "irm"])))
def test_unseen_split_with_named_concepts(docs, seed, held):
    out = unseen_concept_split(docs, seed, held_out=held)
    for k in ("train", "dev", "test"):
        assert not any(concept_key(e) in held for d in out[k] for e in d.entities)
    assert all(any(concept_key(e) in held for e in d.entities) for d in out["unseen"])
    assert _same_members(out, unseen_concept_split(docs[::-1], seed, held_out=held))


def _same_members(a: dict, b: dict) -> bool:
    return all(sorted(d.id for d in a[k]) == sorted(d.id for d in b[k]) for k in a)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), seed=st.integers(0, 2**32), dev=st.floats(0, 0.4), test=st.floats(0, 0.4))
def test_split_sizes_and_order(n, seed, dev, test):
    docs = [Document(f"d{i}", "texte") for i in range(n)]
    out = split_documents(docs, seed, dev=dev, test=test)
    assert len(out["test"]) == round(test * n)
    assert len(out["dev"]) == min(round(dev * n), n - round(test * n))
    assert _same_members(out, split_documents(docs[::-1], seed, dev=dev, test=test))


def test_toy_corpus_split_reproducible():
    docs = make_toy_corpus(50, seed=4)
    assert unseen_concept_split(docs, 7, held_out=0.2) == unseen_concept_split(make_toy_corpus(50, seed=4), 7, held_out=0.2)
