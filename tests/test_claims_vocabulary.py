"""One verdict vocabulary for the whole book (``lib.claims.VERDICTS``).

Every chapter's claims rows — computed from the synthetic and fake results its own tests already build — may only
use a base word of the vocabulary, optionally followed by one parenthesised qualifier. Each chapter's claims tests
are re-run here with the chapter's ``claims`` function wrapped, so every row they produce is checked (and, shown at
the quick and medium profiles through ``judged``, checked again as a reader would see it).
"""

from __future__ import annotations

import importlib

import pytest

from lib.claims import QUICK_VERDICT, VERDICTS, judged, qualify, verdict_base, verdict_legend_rows

# chapter module → the tests of that chapter that build claims rows from synthetic/fake results (no training)
CLAIMS_TESTS = {
    "anti_aliasing": ("test_anti_aliasing", ["test_claims_verdicts_come_from_paired_seeds",
                                             "test_timing_interval_and_cpu_verdict"]),
    "spatial_mixing": ("test_spatial_mixing", ["test_claims_on_synthetic_results_follow_the_rules",
                                               "test_claims_identical_arms_and_single_seeds_are_not_decided",
                                               "test_claims_table_and_figures_without_results_say_no_data",
                                               "test_claims_never_mix_classification_and_unshuffling_runs"]),
    "frequency_sensitivity": ("test_frequency_sensitivity",
                              ["test_claims_rows_for_the_linear_and_untrained_sections",
                               "test_claims_rows_use_seed_aware_trend_tests_and_cover_the_new_sections"]),
    "spectral_leakage": ("test_spectral_leakage", ["test_claims_table_applies_the_rule_to_paired_seeds"]),
    "synthesis": ("test_synthesis", ["test_claims_on_synthetic_results_give_the_expected_verdicts",
                                     "test_claims_with_one_seed_or_missing_variants_do_not_decide",
                                     "test_quick_profile_shows_not_judged"]),
}


def test_vocabulary_parser():
    assert set(VERDICTS) == {"supported", "partly supported", "contradicted", "inconclusive", "not judged", "not run"}
    assert verdict_base(QUICK_VERDICT) == "not judged"
    for verdict, base in [("supported", "supported"), ("partly supported (2 of 3 layers)", "partly supported"),
                          ("inconclusive (1 seed)", "inconclusive"), ("inconclusive (p (exact))", "inconclusive"),
                          ("not run", "not run")]:
        assert verdict_base(verdict) == base, verdict
    for verdict in ["holds", "fits (R² ≥ 0.8)", "lower", "approximate only", "not comparable (CPU)",
                    "failure reproduced (moments rise)", "supported for CPU compute time", "inconclusive (a) (b)",
                    "—", ""]:
        assert verdict_base(verdict) is None, verdict
    assert qualify("supported", "CPU") == "supported (CPU)"
    assert qualify("inconclusive (1 seed)", "CPU") == "inconclusive (1 seed; CPU)"
    assert verdict_base(qualify("inconclusive (1 seed)", "CPU")) == "inconclusive"


def test_legend_lists_every_word_once():
    rows = verdict_legend_rows()
    assert [r["verdict"] for r in rows] == list(VERDICTS) + [QUICK_VERDICT]
    assert all(r["meaning"] and "|" not in r["meaning"] for r in rows)


@pytest.mark.parametrize("chapter", sorted(CLAIMS_TESTS))
def test_every_chapter_claims_row_uses_the_vocabulary(chapter, monkeypatch):
    module = importlib.import_module(f"lib.experiments.{chapter}")
    test_module_name, test_names = CLAIMS_TESTS[chapter]
    tests = importlib.import_module(test_module_name)   # tests/ is on sys.path (pytest's rootdir-less test modules)
    original, seen = module.claims, []

    def recording(*args, **kwargs):
        rows = original(*args, **kwargs)
        seen.extend(rows)
        return rows

    monkeypatch.setattr(module, "claims", recording)
    for name in test_names:
        getattr(tests, name)()
    assert seen, f"{chapter}: its claims tests built no rows"
    for profile in ("quick", "medium"):
        for row in judged(seen, profile):
            assert verdict_base(row["verdict"]) is not None, \
                f"{chapter} ({profile}): verdict {row['verdict']!r} of {row['claim']!r} is not in lib.claims.VERDICTS"
