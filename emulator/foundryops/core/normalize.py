"""Normalisation of company names, domains, URLs and e-mail addresses for matching.

Owns the documented rules the matcher compares on (docs/foundryops/matcher.md):
- names: Unicode NFKC, casefold, `&` read as `and`, dots and apostrophes dropped, other
  punctuation as spaces, whitespace collapsed, a leading `the` and trailing legal suffixes
  (Inc, LLC, Corp, GmbH, Ltd, ...) removed, repeatedly (`Acme Co., Ltd.` -> `acme`), but never
  down to nothing;
- domains: from a bare domain, a URL (scheme, path, port and user info dropped) or an e-mail
  address (the part after `@`), NFKC and casefold, a trailing dot and a leading `www.` removed;
  the domain's label (`acme` of `acme.co.uk`) is used to block and to score cross-TLD matches.
Pure functions; imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

import attrs

LEGAL_SUFFIXES = frozenset(
    {
        "inc", "incorporated", "llc", "ltd", "limited", "corp", "corporation", "co", "company",
        "gmbh", "ag", "kg", "ug", "se", "sa", "sas", "sarl", "srl", "spa", "bv", "nv", "plc",
        "llp", "lp", "pty", "pte", "pvt", "kk", "oy", "ab", "as", "aps", "holdings", "group",
    }
)  # fmt: skip
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com",
        "msn.com", "aol.com", "icloud.com", "me.com", "proton.me", "protonmail.com", "gmx.de",
        "gmx.net", "web.de", "mail.ru", "yandex.ru", "qq.com", "163.com", "zoho.com",
    }
)  # fmt: skip
# Second-level labels under a country code (`acme.co.uk`): the label is one further left.
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or"})
_DROP = str.maketrans({".": None, "'": None, "\u2019": None, "&": " and "})
_PUNCT = re.compile(r"[^\w\s]+|_")


@attrs.frozen
class NormalName:
    text: str  # the normalised name ("" when there is none)
    stripped: tuple[str, ...]  # legal suffixes removed, in the order they were written


def name_parts(raw: str) -> tuple[list[str], list[str]]:
    """The name's tokens and the legal suffixes stripped from its end (in written order)."""
    if raw.isascii():
        # str.replace is several times faster than translate on short ASCII strings.
        text = raw.lower().replace(".", "").replace("'", "")
        if "&" in text:
            text = text.replace("&", " and ")
    else:
        text = unicodedata.normalize("NFKC", raw).casefold().translate(_DROP)
    tokens = (_PUNCT.sub(" ", text) if not text.replace(" ", "").isalnum() else text).split()
    if len(tokens) > 1 and tokens[0] == "the":
        del tokens[0]
    stripped: list[str] = []
    while len(tokens) > 1 and tokens[-1] in LEGAL_SUFFIXES:
        stripped.append(tokens.pop())
    stripped.reverse()
    return tokens, stripped


def normalize_name(raw: str) -> NormalName:
    tokens, stripped = name_parts(raw)
    return NormalName(" ".join(tokens), tuple(stripped))


def normalize_domain(raw: str) -> tuple[str | None, str]:
    """The domain in `raw` and where it came from ("email", "url" or "domain")."""
    text = raw.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.casefold()
    source = "domain"
    if "@" in text and "://" not in text:
        text = text.rpartition("@")[2]
        source = "email"
    elif "://" in text or "/" in text:
        source = "url"
        try:
            text = urlsplit(text if "://" in text else "//" + text).hostname or ""
        except ValueError:
            return None, source
    else:
        text = text.partition(":")[0]
    text = text.strip().rstrip(".")
    if text.startswith("www."):
        text = text[4:]
    if "." not in text or " " in text or text.startswith(".") or ".." in text:
        return None, source
    return text, source


def domain_label(domain: str) -> str:
    labels = domain.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL:
        return labels[-3]
    return labels[-2]


NAME_FIELDS = ("company_name", "name", "account_name", "company", "organization")
DOMAIN_FIELDS = ("domain", "website", "url", "company_domain", "web")
EMAIL_FIELDS = ("email", "work_email", "contact_email")


@attrs.frozen
class MatchKey:
    """What the matcher compares for one record (an input or a snapshot row)."""

    name: NormalName | None
    domain: str | None
    domain_source: str  # "domain", "url", "email" or "" when there is no domain
    free_mail: str | None  # a free-mail domain seen in an e-mail field and ignored

    @property
    def label(self) -> str | None:
        return None if self.domain is None else domain_label(self.domain)


def _first_text(record: dict[str, object], fields: tuple[str, ...]) -> str | None:
    for field in fields:
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return value
    return None


def match_key(record: dict[str, object]) -> MatchKey:
    """The name and domain of a record, from the documented field names."""
    return key_of(
        _first_text(record, NAME_FIELDS),
        _first_text(record, DOMAIN_FIELDS),
        _first_text(record, EMAIL_FIELDS),
    )


def key_of(raw_name: str | None, raw_domain: str | None, raw_email: str | None) -> MatchKey:
    """`match_key` of a record whose name, domain and e-mail values are already picked."""
    name = normalize_name(raw_name) if raw_name is not None else None
    if name is not None and not name.text:
        name = None
    domain: str | None = None
    source = ""
    if raw_domain is not None:
        domain, source = normalize_domain(raw_domain)
    free_mail = None
    if domain is None and raw_email is not None:
        found, found_source = normalize_domain(raw_email)
        if found is not None and found in FREE_MAIL_DOMAINS:
            free_mail = found
        elif found is not None:
            domain, source = found, found_source
    return MatchKey(name, domain, source if domain else "", free_mail)
