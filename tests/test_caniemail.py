"""The rendered HTML, linted against the caniemail data for Gmail, Apple Mail, Outlook and Yahoo.

tests/node/lint-email.mjs runs npm @jsx-email/doiuse-email on one email and prints the distinct
(feature, client) pairs it flags as unsupported or only partially supported. Most of them come from
MJML's own boilerplate (@media, class selectors, ...), so the test compares with a stored baseline,
tests/baselines/caniemail.json: a change that makes the email use a feature some client lacks adds a
pair, and the test fails naming it. Pairs that disappear are fine.

Refreshing the baseline, after deciding the new pairs are acceptable (say why in the commit):

    CANIEMAIL_UPDATE_BASELINE=1 .venv/bin/pytest tests/test_caniemail.py
    git diff tests/baselines/caniemail.json

Node (20+) and the package (npm ci --prefix tests/node, or tests/setup.sh) are required: the test fails,
never skips, without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from newsletter.preview import PREVIEW_VALUES

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "lint-email.mjs"
PACKAGE = NODE_DIR / "node_modules" / "@jsx-email" / "doiuse-email" / "package.json"
BASELINE = Path(__file__).resolve().parent / "baselines" / "caniemail.json"
UPDATE_ENV = "CANIEMAIL_UPDATE_BASELINE"
LEVELS = ("unsupported", "partial")


def node_binary() -> str:
    node = shutil.which("node")
    if not node:
        pytest.fail("node not found: install Node 20+ (the caniemail lint never skips)")
    if not PACKAGE.exists():
        pytest.fail(f"{PACKAGE.parent} missing: run `npm ci --prefix tests/node` (or tests/setup.sh)")
    return node


def lint_many(documents: dict[str, str]) -> dict[str, dict]:
    """Lint several HTML documents at once (one Node process each, run side by side)."""
    node = node_binary()
    procs = {}
    for name, html in documents.items():
        procs[name] = subprocess.Popen([node, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, encoding="utf-8", cwd=NODE_DIR)
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(documents[name], timeout=120)
        assert proc.returncode == 0, f"lint-email.mjs failed on {name} ({proc.returncode}): {err.strip()[-2000:]}"
        result = json.loads(out)
        assert result["other"] == [], f"{name}: lint messages in a format lint-email.mjs does not know: {result['other']}"
        results[name] = result
    return results


def pairs(results: dict[str, dict], level: str) -> set[tuple[str, str]]:
    return {(feature, client) for result in results.values() for feature, client in result[level]}


def write_baseline(current: dict[str, set[tuple[str, str]]], clients: list[str]) -> None:
    """One pair per line, sorted, so a refresh shows up in review as a readable diff."""
    lines = ["{", '  "about": "Distinct (feature, client) pairs doiuse-email flags in the rendered digests; '
             'see tests/test_caniemail.py to refresh.",', f'  "clients": {json.dumps(clients)},']
    for i, level in enumerate(LEVELS):
        items = [f"    {json.dumps(list(pair))}" for pair in sorted(current[level])]
        lines.append(f'  "{level}": [\n' + ",\n".join(items) + "\n  ]" + ("," if i < len(LEVELS) - 1 else ""))
    lines.append("}")
    BASELINE.parent.mkdir(exist_ok=True)
    BASELINE.write_text("\n".join(lines) + "\n", encoding="utf-8")


def new_pairs(current: dict[str, set[tuple[str, str]]], baseline: dict) -> dict[str, list[tuple[str, str]]]:
    return {level: sorted(current[level] - {tuple(p) for p in baseline[level]}) for level in LEVELS}


def describe(added: dict[str, list[tuple[str, str]]]) -> str:
    lines = []
    for level, found in added.items():
        lines += [f"  {level}: {feature} in {client}" for feature, client in found]
    return "\n".join(lines)


def test_rendered_html_adds_no_feature_missing_from_the_baseline(sample_renders):
    documents = {name: sample.rendered.personalise(PREVIEW_VALUES)[0] for name, sample in sample_renders.items()}
    results = lint_many(documents)
    current = {level: pairs(results, level) for level in LEVELS}
    clients = next(iter(results.values()))["clients"]
    assert clients == ["gmail.*", "apple-mail.*", "outlook.*", "yahoo.*"]
    # The linter really ran: MJML's responsive @media is always flagged for Outlook on Windows.
    assert ("@media", "outlook.windows") in current["unsupported"]

    if os.environ.get(UPDATE_ENV) == "1":
        write_baseline(current, clients)
    if not BASELINE.exists():
        pytest.fail(f"{BASELINE} missing: create it with {UPDATE_ENV}=1 (see this module's docstring)")
    baseline = json.loads(BASELINE.read_text(encoding="utf-8"))
    assert baseline["clients"] == clients, "the baseline was made for other clients: refresh it"
    added = new_pairs(current, baseline)
    assert not any(added.values()), (
        "the rendered email now uses features these clients do not (fully) support:\n" + describe(added)
        + f"\nChange the templates, or accept them: {UPDATE_ENV}=1 .venv/bin/pytest tests/test_caniemail.py")


def test_the_comparison_catches_a_new_unsupported_feature(sample_renders):
    """Honesty check: the same email with one extra CSS feature (display:grid, which caniemail lists as
    unsupported in Outlook on Windows and Yahoo) must show new pairs against the baseline."""
    if not BASELINE.exists():
        pytest.fail(f"{BASELINE} missing")
    html = sample_renders["patients"].rendered.personalise(PREVIEW_VALUES)[0]
    marker = '<p class="brand"'
    assert marker in html
    changed = html.replace(marker, '<div style="display:grid"><p>grid</p></div>' + marker, 1)
    results = lint_many({"patients+grid": changed})
    added = new_pairs({level: pairs(results, level) for level in LEVELS},
                      json.loads(BASELINE.read_text(encoding="utf-8")))
    flagged = {feature for level in LEVELS for feature, _ in added[level]}
    assert any("grid" in feature for feature in flagged), describe(added)
