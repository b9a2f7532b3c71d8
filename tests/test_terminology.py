"Terminology loaders: every CIM-10 label's variants, the ATC names, the curated lexicons, the abbreviation inventory."
import re

import pytest

from partages.core import LABELS, DataFormatError
from partages.terminology import (edsnlp_resource, load_abbreviation_inventory, load_abbreviations, load_anatomy,
                                  load_atc, load_cim10, load_procedures, mention_variants, read_tsv)

APPARATUS = re.compile(r"sans précision$|sans précision,|non classée?s? ailleurs$|\bSAI$|non précisée?s?$|\([A-Z]\d{2}[^)]*\)|\*\*\*|\[|\]|\(\)")


def test_cim10_variants_carry_no_apparatus():
    concepts = load_cim10(external_causes=True)
    for c in concepts:
        assert c.variants, c
        for v in c.variants:
            assert v and v == v.strip(), (c.code, v)
            assert not APPARATUS.search(v), (c.code, c.term, v)
            assert "  " not in v, (c.code, v)
            assert not v.endswith(","), (c.code, v)


def test_cim10_codes_unique_and_diso():
    concepts = load_cim10()
    assert len({c.code for c in concepts}) == len(concepts)
    assert {c.label for c in concepts} == {"DISO"}
    assert {c.system for c in concepts} == {"CIM-10"}


def test_cim10_main_diagnoses_exist():
    type0 = [c for c in load_cim10() if c.meta["pmsi_type"] == 0]
    assert len(type0) > 5_000


def test_mention_variants_keeps_acronym_case():
    assert mention_variants("SIDA avéré sans précision") == ["SIDA avéré"]
    assert mention_variants("Maladie de Crohn de l'intestin grêle") == ["maladie de Crohn de l'intestin grêle"]


def test_atc_level5_has_french_names():
    atc = load_atc()
    assert all(len(c.code) == 7 for c in atc)
    assert all(c.meta["level"] == 5 for c in atc)
    assert all(c.variants[0] == c.term for c in atc)
    names = {v for c in atc for v in c.variants}
    for drug in ("amlodipine", "metformine", "furosemide", "paracetamol", "Doliprane", "Kardegic"):
        assert drug in names, drug
    assert "opioidesetamol" not in names


def test_edsnlp_resource_missing_file():
    with pytest.raises(DataFormatError, match="not found; install edsnlp"):
        edsnlp_resource("absent.csv")


def test_curated_lexicon_sizes():
    assert len({a.abbreviation for a in load_abbreviations()}) >= 300
    assert len(load_anatomy()) >= 200
    assert len(load_procedures()) >= 200


def test_curated_concepts_well_formed():
    for c in load_anatomy() + load_procedures():
        assert c.code == c.term
        assert c.variants[0] == c.term
        assert all(v and v == v.strip() and "|" not in v for v in c.variants), c
    assert all(c.meta["region"] for c in load_anatomy())
    assert all(c.meta["kind"] for c in load_procedures())
    assert all(c.meta["specialty"] for c in load_procedures())


def test_abbreviations_well_formed():
    for a in load_abbreviations():
        assert a.abbreviation, a
        assert a.expansion, a
        assert a.label in (*LABELS, None), a
        assert a.source == "partages"
        assert a.abbreviation not in a.variants, a


def test_abbreviation_label_is_checked(tmp_path):
    p = tmp_path / "abbreviations.tsv"
    p.write_text("abbreviation\texpansion\tlabel\tvariants\nHTA\thypertension artérielle\tDISEASE\t\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"abbreviations\.tsv: line 2: label 'DISEASE', expected one of DISO"):
        load_abbreviations(p)


def test_read_tsv_rejects_wrong_header(tmp_path):
    p = tmp_path / "procedures.tsv"
    p.write_text("term\tvariants\tkind\nscanner\tTDM\timagerie\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"procedures\.tsv: line 1: header is \['term', 'variants', 'kind'\]"):
        load_procedures(p)
    with pytest.raises(DataFormatError, match="lexicon not found"):
        read_tsv(tmp_path / "absent.tsv", ["term"])


def test_abbreviation_inventory_counts(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("PARTAGES_MIRROR", str(mirror))
    monkeypatch.setenv("PARTAGES_CACHE", str(tmp_path))
    inventory = load_abbreviation_inventory()
    assert sum(1 + len(a.expansion_variants) for a in inventory) == 2909
    assert len({a.abbreviation for a in inventory}) == 1856
    assert len(inventory) == 2053
    assert all(a.label is None for a in inventory)
    assert all(a.source == "scossin/abbreviations" for a in inventory)
    senses = [a.expansion for a in inventory if a.abbreviation == "aaa"]
    assert senses == ["anevrisme aorte abdominale"]


def test_abbreviation_inventory_rejects_two_preferred(tmp_path):
    p = tmp_path / "sense_inventory.tsv"
    p.write_text("shortForm\tlongForm\tsense\tPT\nir\tinsuffisance renale\t1\t1\nir\tinsuf renale\t1\t1\n")
    with pytest.raises(DataFormatError, match=r"line 2: 'ir' sense 1 has 2 preferred expansions, expected 1"):
        load_abbreviation_inventory(p)
