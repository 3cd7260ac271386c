"""Normalisation, blocking and scoring of the matcher (sync, table-driven)."""

from __future__ import annotations

import pytest

from emulator.foundryops.core.errors import InvalidRequest
from emulator.foundryops.core.generate import company_rows
from emulator.foundryops.core.matcher import (
    CANDIDATE_BUDGET,
    PROFILES,
    MatchIndex,
    MatchOptions,
    confidence_of,
)
from emulator.foundryops.core.normalize import match_key, normalize_domain, normalize_name


@pytest.mark.parametrize(
    ("raw", "text", "stripped"),
    [
        ("Acme Inc", "acme", ("inc",)),
        ("ACME, Inc.", "acme", ("inc",)),
        ("The Acme Co., Ltd.", "acme", ("co", "ltd")),
        ("Umbrella GmbH", "umbrella", ("gmbh",)),
        ("Procter & Gamble", "procter and gamble", ()),
        ("\uff26\uff55\uff4c\uff4c Width Corp", "full width", ("corp",)),  # NFKC
        ("STRASSE AG", "strasse", ("ag",)),
        ("Straße AG", "strasse", ("ag",)),  # casefold
        ("Inc", "inc", ()),  # never stripped to nothing
        ("O'Reilly Media LLC", "oreilly media", ("llc",)),
    ],
)
def test_name_normalisation(raw: str, text: str, stripped: tuple[str, ...]) -> None:
    name = normalize_name(raw)
    assert (name.text, name.stripped) == (text, stripped)


@pytest.mark.parametrize(
    ("raw", "domain", "source"),
    [
        ("acme.com", "acme.com", "domain"),
        ("WWW.Acme.COM", "acme.com", "domain"),
        ("https://www.acme.com/about?x=1", "acme.com", "url"),
        ("http://user@acme.com:8080/", "acme.com", "url"),
        ("acme.com/contact", "acme.com", "url"),
        ("Info@Acme.com", "acme.com", "email"),
        ("acme.co.uk.", "acme.co.uk", "domain"),
        ("not a domain", None, "domain"),
        ("http://[broken", None, "url"),
    ],
)
def test_domain_normalisation(raw: str, domain: str | None, source: str) -> None:
    assert normalize_domain(raw) == (domain, source)


def test_free_mail_domains_are_not_company_domains() -> None:
    key = match_key({"company_name": "Acme", "email": "jane@gmail.com"})
    assert key.domain is None
    assert key.free_mail == "gmail.com"
    assert match_key({"email": "jane@acme.com"}).domain == "acme.com"


ACCOUNTS = [
    ("Acme Inc", "acme.com", None),
    ("Acme Corporation", "acmecorp.com", None),
    ("Globex Corp", "globex.com", None),
    ("Initech LLC", "initech.com", None),
    ("Umbrella GmbH", "umbrella.de", None),
    ("Acme Rockets", "acme.co.uk", None),
]


@pytest.fixture(scope="module")
def index() -> MatchIndex:
    return MatchIndex.build("dss_t", ACCOUNTS)


def test_the_source_record_example_matches_acme_with_reasons(index: MatchIndex) -> None:
    options = MatchOptions.from_json(
        {"profile": "balanced", "threshold": 0.8, "top_n": 5, "return_explanations": True}
    )
    matches = index.match({"company_name": "Acme Inc", "domain": "acme.com"}, options)
    assert matches[0].row == 0
    assert matches[0].score == 1.0
    assert matches[0].confidence == "high"
    codes = [reason.code for reason in matches[0].reasons]
    assert codes == ["exact_name", "stripped_suffix", "exact_domain"]
    assert all(m.score >= 0.8 for m in matches)


@pytest.mark.parametrize(
    ("record", "profile", "best_row", "must_have"),
    [
        ({"company_name": "Globex Corporation"}, "balanced", 2, "stripped_suffix"),
        ({"company_name": "Globx", "domain": "globex.com"}, "balanced", 2, "fuzzy_name"),
        ({"company_name": "Initech", "website": "https://www.initech.com/x"}, "high_precision", 3,
         "domain_from_url"),
        ({"company_name": "Someone", "email": "bob@umbrella.de"}, "leads_to_accounts", 4,
         "domain_from_email"),
        ({"company_name": "Acme Rockets", "domain": "acme.com"}, "balanced", 5, "domain_label"),
    ],
)  # fmt: skip
def test_profiles_find_the_expected_account(
    index: MatchIndex, record: dict[str, object], profile: str, best_row: int, must_have: str
) -> None:
    options = MatchOptions.from_json({"profile": profile, "threshold": 0.0})
    matches = index.match(record, options)
    assert matches[0].row == best_row
    assert must_have in [reason.code for reason in matches[0].reasons]


def test_threshold_top_n_and_explanations_are_honoured(index: MatchIndex) -> None:
    loose = MatchOptions.from_json({"profile": "high_recall", "threshold": 0.0, "top_n": 2})
    assert len(index.match({"company_name": "Acme"}, loose)) == 2
    strict = MatchOptions.from_json({"threshold": 1.0, "return_explanations": False})
    matches = index.match({"company_name": "Acme Inc", "domain": "acme.com"}, strict)
    assert [m.row for m in matches] == [0]
    assert matches[0].reasons == ()
    assert index.match({"company_name": "Nothing Alike"}, strict) == []


def test_results_are_deterministic_and_ordered_by_score_then_row(index: MatchIndex) -> None:
    options = MatchOptions.from_json({"profile": "high_recall", "threshold": 0.0, "top_n": 50})
    first = index.match({"company_name": "Acme"}, options)
    again = MatchIndex.build("dss_t", ACCOUNTS).match({"company_name": "Acme"}, options)
    assert first == again
    keys = [(-m.score, m.row) for m in first]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"profile": "nope"}, "options.profile"),
        ({"threshold": 1.5}, "options.threshold"),
        ({"threshold": "high"}, "options.threshold"),
        ({"top_n": 0}, "options.top_n"),
        ({"top_n": 51}, "options.top_n"),
        ({"return_explanations": "yes"}, "options.return_explanations"),
        ({"colour": "red"}, "options.colour"),
        ([], "options"),
    ],
)
def test_bad_options_are_refused(options: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        MatchOptions.from_json(options)
    assert caught.value.details["field"] == field


def test_a_record_without_name_or_domain_is_refused(index: MatchIndex) -> None:
    with pytest.raises(InvalidRequest):
        index.match({"city": "Springfield"}, MatchOptions.from_json({}))


def test_profiles_and_confidence_levels_are_documented_values() -> None:
    assert set(PROFILES) == {"high_precision", "balanced", "high_recall", "leads_to_accounts"}
    for profile in PROFILES.values():
        assert profile.name_weight + profile.domain_weight == pytest.approx(1.0)
    assert [confidence_of(s) for s in (0.95, 0.9, 0.8, 0.75, 0.5)] == [
        "high", "high", "medium", "medium", "low",
    ]  # fmt: skip


def test_blocking_compares_a_record_with_few_rows_of_a_large_snapshot() -> None:
    rows = list(company_rows(50_000, seed=3))
    index = MatchIndex.build("dss_big", ((n, d, None) for n, d, _ in rows))
    name, domain, _ = rows[12_345]
    key = match_key({"company_name": name, "domain": domain})
    candidates = index.candidates(key)
    assert 12_345 in candidates
    assert len(candidates) <= CANDIDATE_BUDGET
    assert len(candidates) < index.size // 10
    best = index.match({"company_name": name, "domain": domain}, MatchOptions.from_json({}))[0]
    assert best.row == 12_345
    assert index.index_bytes() / index.size < 300


def test_the_hot_loop_gives_exactly_the_documented_scores() -> None:
    import random

    from emulator.foundryops.core.matcher import _SCORERS, score_pair

    rng = random.Random(3)
    rows = list(company_rows(3_000, seed=9))
    index = MatchIndex.build("dss_c", ((n, d, None) for n, d, _ in rows))
    checked = 0
    for _ in range(150):
        name, domain, _ = rng.choice(rows)
        record: dict[str, object] = {}
        if rng.random() < 0.8:
            record["company_name"] = name[: rng.randrange(3, len(name) + 1)]
        if rng.random() < 0.6 or not record:
            record["domain"] = rng.choice([domain, domain.replace(".com", ".de"), "other.org"])
        key = match_key(record)
        for profile in PROFILES.values():
            options = MatchOptions.from_json({"profile": profile.name, "threshold": 0.0,
                                              "top_n": 50})  # fmt: skip
            for match in index.match(record, options):
                expected = score_pair(
                    key, index.names[match.row], index.domains[match.row], profile,
                    _SCORERS[profile.name_scorer],
                )  # fmt: skip
                assert expected is not None
                assert match.score == expected[0]
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_skipping_far_names_never_changes_the_answer(threshold: float) -> None:
    """The matcher skips (in rapidfuzz) names that cannot reach the threshold; the answer must
    equal scoring every candidate with score_pair."""
    import random

    from emulator.foundryops.core.matcher import _SCORERS, score_pair

    rng = random.Random(int(threshold * 100))
    rows = list(company_rows(3_000, seed=11))
    rows += [("", f"nameless{n}.com", "US") for n in range(20)]
    index = MatchIndex.build("dss_s", ((n or None, d, None) for n, d, _ in rows))
    for _ in range(120):
        name, domain, _ = rng.choice(rows)
        record: dict[str, object] = {"company_name": (name or "Acme")[: rng.randrange(3, 30)]}
        if rng.random() < 0.6:
            record["domain"] = rng.choice([domain, domain.replace(".", "x.", 1), "other.org"])
        key = match_key(record)
        for profile in PROFILES.values():
            options = MatchOptions.from_json(
                {"profile": profile.name, "threshold": threshold, "top_n": 50}
            )
            brute = []
            for row in index.candidates(key):
                scored = score_pair(
                    key, index.names[row], index.domains[row], profile,
                    _SCORERS[profile.name_scorer],
                )  # fmt: skip
                if scored is not None and scored[0] >= threshold:
                    brute.append((-scored[0], row))
            expected = [(row, -negative) for negative, row in sorted(brute)[:50]]
            assert [(m.row, m.score) for m in index.match(record, options)] == expected


def test_candidates_of_many_records_equal_those_found_one_by_one() -> None:
    import random

    rng = random.Random(5)
    rows = list(company_rows(20_000, seed=4))
    index = MatchIndex.build("dss_m", ((n, d, None) for n, d, _ in rows))
    keys = []
    for _ in range(400):
        name, domain, _ = rng.choice(rows)
        record: dict[str, object] = {"company_name": name[: rng.randrange(1, len(name) + 1)]}
        if rng.random() < 0.5:
            record["domain"] = rng.choice([domain, "unknown-company.org"])
        keys.append(match_key(record))
    keys.append(match_key({"email": "someone@gmail.com"}))  # no name, no domain: no blocks
    many = index.candidates_many(keys)
    assert many == [index.candidates(key) for key in keys]
    assert sum(map(len, many)) > 400
    assert many[-1] == []
