"""Subscribers in: validated, normalised addresses; CSV with bad rows; export round trip; suppression."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from newsletter.cli import cli
from newsletter.sources.subscribers import (CSV_COLUMNS, SubscriberError, clean_subscriber, normalise_email,
                                           read_csv, read_csv_file, write_csv)

DATA = Path(__file__).resolve().parent / "data" / "subscribers"
SEGMENTS = ("patients", "caregivers", "clinicians")


def invoke(runner, ctx, *args):
    return runner.invoke(cli, ["--config", str(ctx.config.source), *map(str, args)], catch_exceptions=False)


def people(ctx) -> dict[str, dict]:
    return {r["email"]: r for r in ctx.store.subscribers()}


# -- validation -----------------------------------------------------------------

def test_addresses_are_normalised():
    assert normalise_email("  Maria.Lopez@Example.ORG ") == "maria.lopez@example.org"
    with pytest.raises(SubscriberError, match=r"^email: 'not-an-email': "):
        normalise_email("not-an-email")
    with pytest.raises(SubscriberError, match=r"^email: "):
        normalise_email("two@@example.org")


@pytest.mark.parametrize("raw, field", [
    ({"email": "a@example.org", "segment": "astronauts"}, "segment"),
    ({"email": "a@example.org", "segment": "patients", "cadence": "daily"}, "cadence"),
    ({"email": "a@example.org", "segment": "patients", "status": "vip"}, "status"),
    ({"email": "a@example.org", "segment": "patients", "name": "<script>"}, "name"),
    ({"email": "", "segment": "patients"}, "email"),
])
def test_clean_subscriber_names_the_bad_field(raw, field):
    with pytest.raises(SubscriberError, match=rf"^{field}: "):
        clean_subscriber(raw, SEGMENTS)


def test_known_topics_are_checked_and_canonicalised():
    rec = clean_subscriber({"email": "a@example.org", "segment": "patients", "topics": "nmosd; ms"},
                           SEGMENTS, known_topics=["MS", "NMOSD", "PML"])
    assert rec["topics"] == ["MS", "NMOSD"]
    with pytest.raises(SubscriberError, match=r"^topics: 'Zebra'"):
        clean_subscriber({"email": "a@example.org", "segment": "patients", "topics": ["Zebra"]}, SEGMENTS,
                         known_topics=["MS"])


def test_one_address_is_one_subscriber(site, runner):
    assert invoke(runner, site, "subscribers", "add", "Same.Person@Example.org", "--segment", "patients").exit_code == 0
    result = invoke(runner, site, "subscribers", "add", "same.person@example.ORG", "--segment", "clinicians",
                    "--confirmed")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("updated same.person@example.org")
    assert list(people(site)) == ["same.person@example.org"]
    assert people(site)["same.person@example.org"]["segment"] == "clinicians"


# -- CSV import ------------------------------------------------------------------

def test_read_csv_reports_bad_rows_by_line():
    with (DATA / "mixed.csv").open(encoding="utf-8") as fh:
        result = read_csv(fh, SEGMENTS)
    assert [r["email"] for r in result.good] == ["ok.one@example.org", "ok.two@example.com", "ok.three@example.org"]
    assert result.good[1]["topics"] == ["NMOSD", "PML"]
    assert result.good[2]["name"] == "Three, Ok"
    assert [(line, reason.split(":")[0]) for line, reason in result.bad] == [
        (3, "email"), (5, "segment"), (6, "cadence"), (7, "status"), (8, "email")]
    assert "already on line 2" in dict(result.bad)[8]


def test_csv_import_reports_bad_rows_and_imports_the_good(site, runner):
    path = DATA / "mixed.csv"
    result = invoke(runner, site, "subscribers", "import", path)
    assert result.exit_code == 0, result.output
    errors = result.stderr.strip().splitlines()
    assert [e.split(": ")[1] for e in errors] == ["line 3", "line 5", "line 6", "line 7", "line 8"]
    assert all(e.startswith(f"{path}: line ") for e in errors)
    assert "astronauts" in errors[1] and "fortnightly" in errors[2] and "vip" in errors[3]
    assert result.stdout.strip() == "3 added, 0 updated, 5 rejected"
    stored = people(site)
    assert set(stored) == {"ok.one@example.org", "ok.two@example.com", "ok.three@example.org"}
    assert stored["ok.one@example.org"]["status"] == "active"
    assert stored["ok.two@example.com"]["status"] == "pending"
    assert stored["ok.two@example.com"]["cadence"] == "monthly"

    again = invoke(runner, site, "subscribers", "import", path)
    assert again.stdout.strip() == "0 added, 3 updated, 5 rejected"
    assert len(people(site)) == 3


def test_strict_csv_import_rejects_the_whole_file(site, runner):
    result = invoke(runner, site, "subscribers", "import", "--strict", DATA / "mixed.csv")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {DATA / 'mixed.csv'}: 5 bad rows")
    assert site.store.subscribers() == []


def test_strict_import_rolls_back_rows_already_written_when_the_last_row_repeats_an_address(site, runner, tmp_path):
    """Rows are written a chunk at a time; the repeat is found at the end, and still nothing is kept."""
    path = tmp_path / "long.csv"
    rows = [f"p{i}@example.org,patients,active" for i in range(4500)] + ["P7@example.org,patients,active"]
    path.write_text("email,segment,status\n" + "\n".join(rows) + "\n")
    result = invoke(runner, site, "subscribers", "import", "--strict", path)
    assert result.exit_code == 1
    assert "line 4502: email: p7@example.org already on line 9" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"Error: {path}: 1 bad rows; nothing imported (--strict)"
    assert site.store.subscribers() == []
    done = invoke(runner, site, "subscribers", "import", path)
    assert done.stdout.strip() == "4500 added, 0 updated, 1 rejected" and len(site.store.subscribers()) == 4500


def test_strict_import_of_a_clean_file_imports_it(site, runner, tmp_path):
    clean = tmp_path / "clean.csv"
    clean.write_text("email,segment,status\nclean@example.org,patients,active\n")
    result = invoke(runner, site, "subscribers", "import", "--strict", clean)
    assert result.exit_code == 0
    assert list(people(site)) == ["clean@example.org"]


def test_csv_with_a_bad_header_is_refused(site, runner):
    result = invoke(runner, site, "subscribers", "import", DATA / "bad-header.csv")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: {DATA / 'bad-header.csv'}: line 1: unknown column 'favourite_colour'")
    assert site.store.subscribers() == []


def test_csv_with_a_byte_order_mark_imports(site, runner, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("email,segment\nbom@example.org,caregivers\n".encode("utf-8-sig"))
    result = invoke(runner, site, "subscribers", "import", path)
    assert result.exit_code == 0, result.output
    assert list(people(site)) == ["bom@example.org"]


# -- export, round trip ------------------------------------------------------------

def test_export_then_import_round_trips(make_site, runner):
    source = make_site("source")
    rows = [
        {"email": "jose.martinez@example.org", "name": "José Martínez", "segment": "caregivers",
         "cadence": "weekly", "topics": ["Autoimmune encephalitis", "MS"], "status": "active"},
        {"email": "smith@example.com", "name": 'Smith, "Jane"', "segment": "clinicians", "cadence": "monthly",
         "topics": [], "status": "pending"},
        {"email": "liam@example.net", "name": "Liam O'Connor", "segment": "patients", "cadence": "weekly",
         "topics": ["PML"], "status": "unsubscribed"},
    ]
    source.store.upsert_subscribers(rows)
    exported = invoke(runner, source, "subscribers", "export")
    assert exported.exit_code == 0
    assert exported.stdout.splitlines()[0] == ",".join(CSV_COLUMNS)

    target = make_site("target")
    path = Path(str(target.config.source)).parent / "people.csv"
    path.write_text(exported.stdout, encoding="utf-8")
    result = invoke(runner, target, "subscribers", "import", "--strict", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 added")

    keys = ("email", "name", "segment", "cadence", "topics", "status")
    assert ({tuple(map(str, (r[k] for k in keys))) for r in target.store.subscribers()}
            == {tuple(map(str, (r[k] for k in keys))) for r in source.store.subscribers()})
    assert invoke(runner, target, "subscribers", "export").stdout == exported.stdout


def test_export_by_segment(loaded, runner):
    result = invoke(runner, loaded, "subscribers", "export", "--segment", "clinicians")
    parsed = read_csv(io.StringIO(result.stdout), SEGMENTS)
    assert parsed.bad == []
    assert {r["segment"] for r in parsed.good} == {"clinicians"}
    assert len(parsed.good) == len(loaded.store.subscribers(segment="clinicians"))


def test_write_csv_output_is_importable():
    text = write_csv([{"email": "a@example.org", "name": "A, B", "segment": "patients", "cadence": "weekly",
                       "topics": ["MS", "PML"], "status": "active"}])
    [rec] = read_csv(io.StringIO(text), SEGMENTS).good
    assert rec["name"] == "A, B" and rec["topics"] == ["MS", "PML"]


# -- nobody is re-subscribed by an import ----------------------------------------------

def active_row_csv(tmp_path: Path, email: str, status: str = "active") -> Path:
    path = tmp_path / f"{status}.csv"
    path.write_text(f"email,name,segment,cadence,topics,status\n{email},Back Again,patients,weekly,,{status}\n")
    return path


def test_an_unsubscribed_address_is_not_reactivated_by_import(site, runner, tmp_path):
    site.store.upsert_subscribers([{"email": "gone@example.org", "segment": "patients", "status": "active"}])
    sid = site.store.get_subscriber("gone@example.org")["id"]
    site.store.set_subscriber_status(sid, "unsubscribed")
    result = invoke(runner, site, "subscribers", "import", active_row_csv(tmp_path, "gone@example.org"))
    assert result.exit_code == 0, result.output
    assert "1 kept unsubscribed" in result.stdout
    assert site.store.get_subscriber("gone@example.org")["status"] == "unsubscribed"


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_bounced_or_complained_addresses_stay_suppressed(site, status):
    site.store.upsert_subscribers([{"email": "b@example.org", "segment": "patients", "status": "active"}])
    site.store.set_subscriber_status(site.store.get_subscriber("b@example.org")["id"], status)
    site.store.upsert_subscribers([{"email": "b@example.org", "segment": "patients", "status": "active"}])
    assert site.store.get_subscriber("b@example.org")["status"] == status


def test_remove_deletes_the_person_and_keeps_the_address_suppressed(site, runner, tmp_path):
    site.store.upsert_subscribers([{"email": "erase.me@example.org", "name": "Erase Me", "segment": "clinicians",
                                    "status": "active"}])
    result = invoke(runner, site, "subscribers", "remove", "Erase.Me@Example.org")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "removed erase.me@example.org (and 0 message(s) to it in the outbox)"
    assert site.store.get_subscriber("erase.me@example.org") is None
    assert site.store.is_suppressed("erase.me@example.org")
    # Only a hash is kept: the address itself is nowhere in the database.
    dump = "\n".join(site.store.conn.iterdump())
    assert "erase.me@example.org" not in dump and "Erase Me" not in dump

    result = invoke(runner, site, "subscribers", "import", active_row_csv(tmp_path, "erase.me@example.org"))
    assert result.exit_code == 0
    assert site.store.get_subscriber("erase.me@example.org")["status"] != "active"


def test_a_removed_address_is_not_reactivated_by_two_imports(site, tmp_path, runner):
    """Importing it as pending, then as active, must not get round the suppression."""
    site.store.upsert_subscribers([{"email": "twice@example.org", "segment": "patients", "status": "active"}])
    assert invoke(runner, site, "subscribers", "remove", "twice@example.org").exit_code == 0
    invoke(runner, site, "subscribers", "import", active_row_csv(tmp_path, "twice@example.org", "pending"))
    invoke(runner, site, "subscribers", "import", active_row_csv(tmp_path, "twice@example.org", "active"))
    assert site.store.get_subscriber("twice@example.org")["status"] != "active"


def test_removing_an_unknown_address_fails_cleanly(site, runner):
    result = invoke(runner, site, "subscribers", "remove", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: nobody@example.org: no such subscriber"


def test_sample_csv_loads_without_bad_rows():
    from newsletter import bootstrap
    with bootstrap.sample_subscribers_csv().open(encoding="utf-8") as fh:
        result = read_csv(fh, SEGMENTS)
    assert result.bad == []
    statuses = {(r["segment"], r["status"]) for r in result.good}
    for segment in SEGMENTS:
        assert (segment, "active") in statuses
    assert {r["status"] for r in result.good} >= {"active", "pending", "unsubscribed"}



def test_an_import_without_a_status_column_does_not_unconfirm_anyone(site, runner):
    """Re-importing a plain address list must not send confirmed readers back to pending."""
    site.store.upsert_subscribers([{"email": "plain.one@example.org", "segment": "patients", "status": "active"}])
    result = invoke(runner, site, "subscribers", "import", DATA / "no-status.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("1 added, 1 updated")
    assert site.store.get_subscriber("plain.one@example.org")["status"] == "active"
    assert site.store.get_subscriber("plain.two@example.org")["status"] == "pending"


# -- names from CRM exports --------------------------------------------------------

def test_a_name_with_line_breaks_and_tabs_is_imported_on_one_line(site, runner, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text('email,name,segment\nann@example.org,"Ann\r\n\tMarie  Dupont",patients\n'
                    'bob@example.org,Bob,patients\n', encoding="utf-8")
    result = invoke(runner, site, "subscribers", "import", path)
    assert result.exit_code == 0, result.output
    assert people(site)["ann@example.org"]["name"] == "Ann Marie Dupont"


CSV_TEXT = st.lists(st.sampled_from(["Ann", "Zoë", ",", '"', "\n", "\r\n", "\r", "\t", "\ufeff", " ", "<", "O'Neil",
                                     "مرحبا", "\x00", "MS", "NMOSD"]) | st.text(max_size=6), max_size=8).map("".join)
ROW = st.fixed_dictionaries({
    "email": st.sampled_from(["ann@example.org", "Bob@Example.org", "zoë@example.org", "not an address", "",
                              "c@example.org\n", "d,e@example.org"]) | st.from_regex(r"\A[a-z]{1,8}@example\.org\Z"),
    "name": CSV_TEXT, "segment": st.sampled_from(["patients", "clinicians", "nobody", " caregivers"]),
    "topics": CSV_TEXT, "status": st.sampled_from(["", "active", "pending", "gone"])})


@given(rows=st.lists(ROW, max_size=10), bom=st.booleans(), ending=st.sampled_from(["\n", "\r\n"]))
def test_any_csv_imports_good_rows_on_one_line_and_reports_bad_rows_by_line(tmp_path_factory, rows, bom, ending):
    out = io.StringIO()
    # The csv writer quotes a field holding a line break only when that break is in its line terminator.
    writer = csv.writer(out, lineterminator=ending, quoting=csv.QUOTE_MINIMAL if ending == "\r\n" else csv.QUOTE_ALL)
    writer.writerow(["email", "name", "segment", "topics", "status"])
    starts = []
    for row in rows:
        starts.append(len(re.findall("\r\n|\r|\n", out.getvalue())) + 1)  # the line the row starts on
        writer.writerow([row["email"], row["name"], row["segment"], row["topics"], row["status"]])
    path = tmp_path_factory.mktemp("csv") / "people.csv"
    path.write_bytes((("\ufeff" if bom else "") + out.getvalue()).encode("utf-8"))

    result = read_csv_file(path, SEGMENTS)

    bad = dict(result.bad)
    assert len(bad) == len(result.bad) and set(bad) <= set(starts)
    assert len(result.good) + len(result.bad) == len(rows)
    good = iter(result.good)
    for row, line in zip(rows, starts):
        if line in bad:
            continue
        rec = next(good)
        assert rec["email"] == normalise_email(row["email"])
        assert rec["name"] == " ".join(re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", row["name"]).split())
        assert not re.search("[\r\n\t\x0b\x0c\x1c-\x1f\x85\u2028\u2029]", rec["name"])
        assert row["segment"].strip() == rec["segment"]
