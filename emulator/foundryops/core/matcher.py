"""The matcher: profiles, match options, the blocking index of a snapshot, scores and reasons.

Owns `Profile` and `PROFILES` (high_precision, balanced, high_recall, leads_to_accounts: the
documented weights and thresholds), `MatchOptions` (profile, threshold, top_n,
return_explanations, validated from a request), `MatchIndex` (built once per snapshot: the
normalised name and domain of every row, and a sorted array of 64-bit blocking keys so a
record is compared with the rows that share a block, never with the whole snapshot) and
`Match` (row, score, confidence, reason chips). Deterministic: the same snapshot, record and
options always give the same matches in the same order (score, then row number).

The scores are the emulator's own, documented in docs/foundryops/matcher.md; FoundryOne's
model is not public. Imports rapidfuzz and numpy (the sorted keys are searched for all of a
record's blocks in one call); nothing from trio, quart or yaml.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from zlib import crc32

import attrs
import numpy as np
import numpy.typing as npt
from rapidfuzz import fuzz, process

from .errors import InvalidRequest, PayloadTooLarge
from .normalize import (
    DOMAIN_FIELDS,
    EMAIL_FIELDS,
    FREE_MAIL_DOMAINS,
    NAME_FIELDS,
    MatchKey,
    domain_label,
    match_key,
    name_parts,
    normalize_domain,
)

# Rows per index: the row number takes the low 24 bits of a blocking key.
MAX_INDEXED_ROWS = (1 << 24) - 1
_ROW_BITS = 24
_ROW_MASK = (1 << _ROW_BITS) - 1
# A block larger than this says little (a very common first word): it is used only when no
# other block of the record gives a candidate, and then only its first rows.
MAX_BLOCK = 512
# At most this many rows are scored for one record (the cost of a match is about linear in it).
CANDIDATE_BUDGET = 128
# Blocks up to this size are unpacked with Python ints rather than numpy (call overhead).
SMALL_BLOCK = 16
MAX_TOP_N = 50
DEFAULT_TOP_N = 5

Scorer = Callable[..., float]
_SCORERS: dict[str, Scorer] = {
    "ratio": fuzz.ratio,
    "token_sort_ratio": fuzz.token_sort_ratio,
    "token_set_ratio": fuzz.token_set_ratio,
}


@attrs.frozen
class Profile:
    """A documented weighting: how name and domain similarity make one score."""

    name: str
    threshold: float  # default minimum score of a returned match
    name_weight: float
    domain_weight: float
    name_scorer: str  # a rapidfuzz.fuzz function
    # The score is multiplied by this when only one of name and domain can be compared.
    single_field_factor: float
    # When the domains are equal the score is at least this (None: no floor).
    domain_match_floor: float | None
    # A different domain on both sides lowers the score by this much.
    domain_mismatch_penalty: float

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("high_precision", 0.90, 0.5, 0.5, "ratio", 0.85, None, 0.15),
        Profile("balanced", 0.80, 0.6, 0.4, "token_sort_ratio", 0.95, None, 0.05),
        Profile("high_recall", 0.60, 0.7, 0.3, "token_set_ratio", 1.0, None, 0.0),
        Profile("leads_to_accounts", 0.75, 0.35, 0.65, "token_set_ratio", 0.9, 0.9, 0.1),
    )
}


def confidence_of(score: float) -> str:
    """high from 0.90, medium from 0.75, low below (the same for every profile)."""
    if score >= 0.9:
        return "high"
    if score >= 0.75:
        return "medium"
    return "low"


@attrs.frozen
class MatchOptions:
    profile: Profile
    threshold: float
    top_n: int
    return_explanations: bool

    @classmethod
    def from_json(cls, data: object) -> MatchOptions:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise _bad("options", "options must be an object.")
        known = {"profile", "threshold", "top_n", "return_explanations"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _bad(f"options.{unknown[0]}", f"Unknown option '{unknown[0]}'.")
        profile_name = data.get("profile", "balanced")
        profile = PROFILES.get(profile_name) if isinstance(profile_name, str) else None
        if profile is None:
            raise _bad(
                "options.profile",
                f"profile must be one of {', '.join(PROFILES)}.",
                allowed=list(PROFILES),
            )
        threshold = data.get("threshold", profile.threshold)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise _bad("options.threshold", "threshold must be a number from 0 to 1.")
        if not 0.0 <= threshold <= 1.0:
            raise _bad("options.threshold", "threshold must be a number from 0 to 1.")
        top_n = data.get("top_n", DEFAULT_TOP_N)
        if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= MAX_TOP_N:
            raise _bad("options.top_n", f"top_n must be an integer from 1 to {MAX_TOP_N}.")
        explain = data.get("return_explanations", True)
        if not isinstance(explain, bool):
            raise _bad("options.return_explanations", "return_explanations must be a boolean.")
        return cls(profile, float(threshold), top_n, explain)

    def to_json(self) -> dict[str, Any]:
        """The options as `from_json` reads them (a saved job keeps its options)."""
        return {
            "profile": self.profile.name,
            "threshold": self.threshold,
            "top_n": self.top_n,
            "return_explanations": self.return_explanations,
        }


def _bad(field: str, message: str, **extra: Any) -> InvalidRequest:
    return InvalidRequest("INVALID_REQUEST", message, {"field": field, **extra})


@attrs.frozen
class Reason:
    """A reason chip: a code, a human label and, where it applies, a score or a value."""

    code: str
    label: str
    score: float | None = None
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "label": self.label}
        if self.score is not None:
            out["score"] = self.score
        if self.value is not None:
            out["value"] = self.value
        return out


@attrs.frozen
class Match:
    row: int
    score: float
    confidence: str
    reasons: tuple[Reason, ...]


# A blocking key is (tag << 32 | crc32 of the text): stable across processes, so blocks (and
# with them results) never depend on Python's per-process string hashing. Two texts with the
# same crc32 share a block; that only adds candidates, which scoring then judges.
_TAG_DOMAIN, _TAG_LABEL, _TAG_TOKEN, _TAG_PAIR = range(1, 5)
# Words of a name that get a block each (the first few carry the name).
MAX_TOKEN_BLOCKS = 4


def _tokens(key: MatchKey) -> list[str]:
    return key.name.text.split() if key.name is not None else []


def _block_keys(tokens: list[str], domain: str | None) -> list[int]:
    """Blocks: the domain, its label, each of the first name words, and the first two words."""
    keys: list[int] = []
    if domain is not None:
        keys.append((_TAG_DOMAIN << 32) | crc32(domain.encode()))
        keys.append((_TAG_LABEL << 32) | crc32(domain_label(domain).encode()))
    if tokens:
        for token in dict.fromkeys(tokens[:MAX_TOKEN_BLOCKS]):
            keys.append((_TAG_TOKEN << 32) | crc32(token.encode()))
        if len(tokens) > 1:
            keys.append((_TAG_PAIR << 32) | crc32(f"{tokens[0]} {tokens[1]}".encode()))
    return keys


def _row_fields(
    raw_name: object, raw_domain: object, raw_email: object
) -> tuple[list[str], str | None]:
    tokens = name_parts(raw_name)[0] if isinstance(raw_name, str) else []
    domain = None
    if isinstance(raw_domain, str):
        domain = normalize_domain(raw_domain)[0]
        if domain == raw_domain:
            domain = raw_domain  # keep one string object, not two equal ones (memory)
    if domain is None and isinstance(raw_email, str):
        found = normalize_domain(raw_email)[0]
        if found is not None and found not in FREE_MAIL_DOMAINS:
            domain = found
    return tokens, domain


def columns_for(names: Iterable[str]) -> tuple[int | None, int | None, int | None]:
    """Positions of the name, domain and e-mail columns in rows with these field names."""
    positions = {name: index for index, name in enumerate(names)}

    def first(candidates: tuple[str, ...]) -> int | None:
        return next((positions[c] for c in candidates if c in positions), None)

    return first(NAME_FIELDS), first(DOMAIN_FIELDS), first(EMAIL_FIELDS)


def project(
    rows: Iterable[tuple[object, ...]], columns: tuple[int | None, int | None, int | None]
) -> Iterator[tuple[object, object, object]]:
    """(name, domain, e-mail) of each row, None where the schema has no such column."""
    name_at, domain_at, email_at = columns
    for row in rows:
        yield (
            None if name_at is None else row[name_at],
            None if domain_at is None else row[domain_at],
            None if email_at is None else row[email_at],
        )


@attrs.frozen(eq=False)
class MatchIndex:
    """Blocking keys and compare-ready fields of every row of one snapshot."""

    snapshot_id: str
    # Tuples, not lists: a tuple holding only strings and None is untracked by the cycle
    # collector after the first collection that sees it, so the full collections a long file
    # job sets off never walk a million entries (tens of ms with the GIL held, every time).
    names: tuple[str | None, ...]
    domains: tuple[str | None, ...]
    keys: npt.NDArray[np.int64]  # sorted: (block key << 24) | row

    @classmethod
    def build(
        cls,
        snapshot_id: str,
        rows: Iterable[tuple[object, object, object]],
        progress: Callable[[int], None] | None = None,
    ) -> MatchIndex:
        """Index rows given as (name, domain, e-mail) raw values (see `columns_for`)."""
        names: list[str | None] = []
        domains: list[str | None] = []
        # Gathered in a typed array (8 bytes a key, not a 32-byte int object), sorted by numpy.
        packed = array("q")
        extend = packed.extend
        for row, (raw_name, raw_domain, raw_email) in enumerate(rows):
            if row > MAX_INDEXED_ROWS:
                raise PayloadTooLarge(
                    "PAYLOAD_TOO_LARGE",
                    f"A snapshot can be matched against up to {MAX_INDEXED_ROWS} rows.",
                    {"limit": MAX_INDEXED_ROWS},
                )
            tokens, domain = _row_fields(raw_name, raw_domain, raw_email)
            names.append(" ".join(tokens) if tokens else None)
            domains.append(domain)
            extend([(block << _ROW_BITS) | row for block in _block_keys(tokens, domain)])
            if progress is not None and row & 0xFFFF == 0:
                progress(row)
        keys = np.frombuffer(packed, dtype=np.int64) if packed else np.empty(0, np.int64)
        return cls(snapshot_id, tuple(names), tuple(domains), np.sort(keys, kind="stable"))

    @property
    def size(self) -> int:
        return len(self.names)

    def index_bytes(self) -> int:
        """Bytes held by the index itself (keys, lists and normalised strings not shared)."""
        total = self.keys.nbytes + sys.getsizeof(self.keys)
        total += sys.getsizeof(self.names) + sys.getsizeof(self.domains)
        seen: set[int] = set()
        for value in (*self.names, *self.domains):
            if value is not None and id(value) not in seen:
                seen.add(id(value))
                total += sys.getsizeof(value)
        return total

    def candidates(self, key: MatchKey) -> list[int]:
        """Rows sharing a block with `key`, rarest blocks first, in row order.

        Blocks are taken from the smallest up (a rare word says more than a common one) while
        the rows gathered stay within CANDIDATE_BUDGET; a block over MAX_BLOCK rows is used
        only when nothing smaller matched, and then only its first CANDIDATE_BUDGET rows."""
        wanted = list(dict.fromkeys(_block_keys(_tokens(key), key.domain)))
        if not wanted:
            return []
        starts = np.array(wanted, dtype=np.int64) << _ROW_BITS
        # Where each block starts and ends, in one search (block keys sort before the keys of
        # any later block, since the row takes the low bits).
        bounds = self.keys.searchsorted(np.concatenate((starts, starts + (1 << _ROW_BITS))))
        found = bounds.tolist()
        return self._gather(found[: len(wanted)], found[len(wanted) :])

    def candidates_many(self, keys: Sequence[MatchKey]) -> list[list[int]]:
        """`candidates` of many records, with one search of the sorted keys for all of them
        (numpy's binary search narrows each search from the last when the needles are
        sorted, so a batch costs far less than its records one by one)."""
        wanted = [list(dict.fromkeys(_block_keys(_tokens(key), key.domain))) for key in keys]
        flat = np.array([block for blocks in wanted for block in blocks], dtype=np.int64)
        if not len(flat):
            return [[] for _ in keys]
        starts = flat << _ROW_BITS
        order = np.argsort(starts, kind="stable")
        ordered = starts[order]
        index_keys = self.keys
        lows = np.empty_like(starts)
        highs = np.empty_like(starts)
        # Block keys sort before the keys of any later block (the row takes the low bits).
        lows[order] = index_keys.searchsorted(ordered)
        highs[order] = index_keys.searchsorted(ordered + (1 << _ROW_BITS))
        low_list, high_list = lows.tolist(), highs.tolist()
        out: list[list[int]] = []
        at = 0
        for blocks in wanted:
            count = len(blocks)
            out.append(self._gather(low_list[at : at + count], high_list[at : at + count]))
            at += count
        return out

    def _gather(self, lows: list[int], highs: list[int]) -> list[int]:
        blocks = sorted(
            (high - low, low, high) for low, high in zip(lows, highs, strict=True) if high > low
        )
        keys = self.keys
        found: set[int] = set()
        for size, low, high in blocks:
            if size > MAX_BLOCK:
                if not found:
                    found.update((keys[low : low + CANDIDATE_BUDGET] & _ROW_MASK).tolist())
                break
            if found and len(found) + size > CANDIDATE_BUDGET:
                break
            if size <= SMALL_BLOCK:
                # A few rows: plain ints cost less than two more numpy calls.
                found.update([value & _ROW_MASK for value in keys[low:high].tolist()])
            else:
                found.update((keys[low:high] & _ROW_MASK).tolist())
        return sorted(found)

    def match(self, record: dict[str, object], options: MatchOptions) -> list[Match]:
        return self.match_normalised(match_key(record), options)

    def match_normalised(
        self, key: MatchKey, options: MatchOptions, candidates: list[int] | None = None
    ) -> list[Match]:
        """`match` for a record already normalised (`normalize.match_key`), optionally with
        its `candidates` already found (`candidates_many`)."""
        if key.name is None and key.domain is None:
            raise InvalidRequest(
                "INVALID_REQUEST",
                "The record needs a company name (company_name, name, account_name, company, "
                "organization) or a domain (domain, website, url, email).",
                {"field": "record"},
            )
        profile = options.profile
        scorer = _SCORERS[profile.name_scorer]
        query_label = key.label
        names, domains = self.names, self.domains
        rows = self.candidates(key) if candidates is None else candidates
        threshold = options.threshold
        # Name similarity of every candidate in one call into rapidfuzz's C code, skipping (in
        # C) names too far off for the candidate to reach the threshold; candidates with the
        # record's exact domain, and nameless ones (domain only), are always scored.
        name_scores: dict[int, float] = {}
        exact: list[int] = []
        if key.domain is not None:
            exact = [
                position
                for position, row in enumerate(rows)
                if domains[row] == key.domain or not names[row]
            ]
        if key.name is not None:
            cutoff = _name_cutoff(threshold, profile, key.domain is not None)
            found = process.extract(
                key.name.text, [names[row] for row in rows], scorer=scorer, processor=None,
                limit=None, score_cutoff=cutoff,
            )  # fmt: skip
            name_scores = {position: score / 100.0 for _, score, position in found}
            for position in exact:
                if position not in name_scores and names[rows[position]]:
                    name_scores[position] = (
                        scorer(key.name.text, names[rows[position]], processor=None) / 100.0
                    )
            chosen = sorted({*name_scores, *exact})
        else:
            chosen = list(range(len(rows)))
        scored = [
            (-score, rows[position])
            for score, position in _scores(
                chosen, rows, name_scores, key.domain, query_label, domains, profile
            )
            if score >= threshold
        ]
        scored.sort()
        results: list[Match] = []
        for negative, row in scored[: options.top_n]:
            reasons: tuple[Reason, ...] = ()
            if options.return_explanations:
                explained = score_pair(key, names[row], domains[row], profile, scorer)
                assert explained is not None
                reasons = explained[1]
            results.append(Match(row, -negative, confidence_of(-negative), reasons))
        return results


# How a candidate's domain compares with the record's: None (one side has none), or one of:
EXACT, LABEL, MISMATCH = "exact", "label", "mismatch"
_DOMAIN_SCORES = {EXACT: 1.0, LABEL: 0.8, MISMATCH: 0.0}


def _name_cutoff(threshold: float, profile: Profile, has_domain: bool) -> float:
    """The lowest name similarity (0-100) with which a candidate whose domain is not the
    record's could still reach `threshold`, less a margin for the rounding to 4 places."""
    wn, wd = profile.name_weight, profile.domain_weight
    alone = threshold / profile.single_field_factor
    needed = min(alone, (threshold * (wn + wd) - 0.8 * wd) / wn) if has_domain else alone
    return max(0.0, min(100.0, (needed - 0.001) * 100.0))


def _scores(
    positions: list[int],
    rows: list[int],
    name_scores: dict[int, float],
    query_domain: str | None,
    query_label: str | None,
    domains: Sequence[str | None],
    profile: Profile,
) -> list[tuple[float, int]]:
    """`combine` for many candidates, inlined (the hot loop of every match); the results are
    the same floats `combine` gives (tests/foundryops/test_foundryops_matcher.py checks it)."""
    wn, wd = profile.name_weight, profile.domain_weight
    factor = profile.single_field_factor
    penalty = profile.domain_mismatch_penalty
    floor = profile.domain_match_floor
    out: list[tuple[float, int]] = []
    append = out.append
    for position in positions:
        row = rows[position]
        name_score = name_scores.get(position)
        domain = domains[row] if query_domain is not None else None
        if domain is None:
            if name_score is None:
                continue
            score = (wn * name_score) / wn * factor
        else:
            if domain == query_domain:
                part = 1.0
            elif (
                query_label is not None
                and query_label in domain
                and (domain_label(domain) == query_label)
            ):
                part = 0.8
            else:
                part = 0.0
            if name_score is None:
                score = (wd * part) / wd * factor
            else:
                score = (wn * name_score + wd * part) / (wn + wd)
            if part == 0.0:
                score -= penalty
            elif part == 1.0 and floor is not None:
                score = max(score, floor)
        append((round(min(max(score, 0.0), 1.0), 4), position))
    return out


def domain_kind(
    query_domain: str | None, query_label: str | None, domain: str | None
) -> str | None:
    if query_domain is None or domain is None:
        return None
    if query_domain == domain:
        return EXACT
    if query_label == domain_label(domain):
        return LABEL
    return MISMATCH


def combine(name_score: float | None, kind: str | None, profile: Profile) -> float | None:
    """The documented score: the weighted mean of the name and domain similarities that can be
    compared, times `single_field_factor` when only one can, minus the mismatch penalty, at
    least the profile's floor for an exact domain; clamped to 0..1 and rounded to 4 places."""
    total = weights = 0.0
    if name_score is not None:
        total += profile.name_weight * name_score
        weights += profile.name_weight
    if kind is not None:
        total += profile.domain_weight * _DOMAIN_SCORES[kind]
        weights += profile.domain_weight
    if weights == 0.0:
        return None
    score = total / weights
    if name_score is None or kind is None:
        score *= profile.single_field_factor
    if kind == MISMATCH:
        score -= profile.domain_mismatch_penalty
    if kind == EXACT and profile.domain_match_floor is not None:
        score = max(score, profile.domain_match_floor)
    return round(min(max(score, 0.0), 1.0), 4)


def score_pair(
    key: MatchKey,
    name: str | None,
    domain: str | None,
    profile: Profile,
    scorer: Scorer,
) -> tuple[float, tuple[Reason, ...]] | None:
    """The score of one candidate row and its reason chips, or None when nothing compares."""
    reasons: list[Reason] = []
    name_score: float | None = None
    if key.name is not None and name:
        name_score = scorer(key.name.text, name, processor=None) / 100.0
        if name_score == 1.0:
            reasons.append(Reason("exact_name", f"Exact name '{name}'", 1.0, name))
        else:
            reasons.append(
                Reason(
                    "fuzzy_name",
                    f"Fuzzy name {round(name_score * 100)}% ({profile.name_scorer})",
                    round(name_score, 4),
                    name,
                )
            )
        for suffix in key.name.stripped:
            reasons.append(
                Reason("stripped_suffix", f"Legal suffix '{suffix}' ignored", None, suffix)
            )
    kind = domain_kind(key.domain, key.label, domain)
    if kind == EXACT:
        reasons.append(Reason("exact_domain", f"Exact domain {domain}", 1.0, domain))
    elif kind == LABEL and domain is not None:
        label = domain_label(domain)
        reasons.append(
            Reason("domain_label", f"Same domain name, other suffix ({domain})", 0.8, label)
        )
    elif kind == MISMATCH:
        reasons.append(Reason("domain_mismatch", f"Different domain {domain}", 0.0, domain))
    if kind is not None and key.domain_source in ("email", "url"):
        source = key.domain_source
        reasons.append(
            Reason(f"domain_from_{source}", f"Domain taken from the {source}", None, key.domain)
        )
    if key.free_mail is not None:
        reasons.append(
            Reason(
                "free_email_domain",
                f"Free-mail domain {key.free_mail} not used",
                None,
                key.free_mail,
            )
        )
    score = combine(name_score, kind, profile)
    if score is None:
        return None
    return score, tuple(reasons)
