"""Property tests: the exports parser only ever raises ExportsError, on any text."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynfsd.exports import (
    ExportsError,
    PseudoFs,
    StaticExportResolver,
    parse_export_line,
    parse_exports,
)

# Characters that matter to the grammar, so that random text often gets deep into it.
ALPHABET = st.sampled_from(
    list("/ \t\n\\\"#()*?[]@-=,:.0123456789abcdefxyz") + ["rw", "ro", "sec=", "krb5", "fsid=",
    "anonuid=", "sync", "\\040", "\\377", "10.0.0.0/8", "::1", "\r", "é", "\x00", "\udcff", "\ud800"]
)  # fmt: skip
GRAMMARISH = st.lists(ALPHABET, max_size=60).map("".join)


def parse_or_error(text: str) -> None:
    try:
        entries = parse_exports(text, "fuzz")
    except ExportsError as e:
        assert str(e).startswith("fuzz")
        return
    for entry in entries:
        assert entry.path.startswith("/")
    try:
        resolver = StaticExportResolver(entries, reverse_lookup=lambda a: ["h.example.com"])
    except ExportsError:
        return
    for addr in ("10.0.0.1", "::1", "192.0.2.1"):
        PseudoFs.build(resolver.exports_for_names(addr, ["h.example.com"]))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_random_text(text: str) -> None:
    parse_or_error(text)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(GRAMMARISH)
def test_grammar_shaped_text(text: str) -> None:
    parse_or_error(text)


@settings(max_examples=300)
@given(GRAMMARISH)
def test_cli_line(text: str) -> None:
    try:
        entry = parse_export_line(text)
    except ExportsError:
        return
    assert entry.path.startswith("/") and entry.clients
