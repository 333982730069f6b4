"""Subscriber files from other tools, in their real export layouts: recognised, statuses mapped (suppressed
never made active), consent kept, unknown columns listed once, bad rows reported by line; topics checked."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from newsletter import bootstrap
from newsletter.model import SUPPRESSED
from newsletter.sources.imports import LAYOUTS, ImportResult, detect, parse_map, parse_time, read_import
from newsletter.sources.subscribers import SubscriberError
from newsletter.sources.summaries import read_sources
from tests.test_ingest_subscribers import invoke, people

DATA = Path(__file__).resolve().parent / "data" / "imports"
SEGMENTS = ("patients", "caregivers", "clinicians")


def consents(ctx, address: str) -> list[dict]:
    return ctx.store.consent_records(ctx.store.get_subscriber(address)["id"])


@pytest.fixture
def topical(site):
    """A site whose stored summaries define the topics MS, NMOSD, MOGAD, PML and Autoimmune encephalitis."""
    site.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    return site


# -- each tool's export, through the CLI ----------------------------------------------------------------

def test_a_mailchimp_audience_export_is_recognised_and_kept_with_its_opt_in(site, runner):
    path = DATA / "mailchimp_subscribed_members_export.csv"
    result = invoke(runner, site, "subscribers", "import", path, "--segment", "patients")
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert err[0] == f"{path}: Mailchimp export (recognised by its header; --from to say otherwise)"
    assert err[1].startswith(f"{path}: ignored 16 columns: Company, Position, ZIP Code, MEMBER_RATING, LATITUDE")
    assert err[2] == f"{path}: line 4: email: 'not-an-address': An email address must have an @-sign."
    assert len(err) == 3
    assert result.stdout.strip() == "3 added, 0 updated, 1 rejected, 3 consent records"
    found = people(site)
    assert {a: (r["name"], r["status"], r["segment"], r["cadence"]) for a, r in found.items()} == {
        "ana.silva@example.org": ("Ana Silva", "active", "patients", "weekly"),
        "ben.okoro@example.com": ("Ben Okoro", "active", "patients", "weekly"),
        "dana.weiss@example.net": ("Dana Weiss", "active", "patients", "weekly")}
    ana, = consents(site, "ana.silva@example.org")
    assert (ana["method"], ana["basis"], ana["opted_in_at"], ana["ip"], ana["wording_version"]) == (
        "import", "imported from Mailchimp", "2024-02-12T10:58:02+00:00", "198.51.100.7", None)  # CONFIRM_*
    dana, = consents(site, "dana.weiss@example.net")
    assert (dana["opted_in_at"], dana["ip"]) == ("2022-11-30T17:45:10+00:00", "203.0.113.40")  # no CONFIRM_*: OPTIN_*
    assert consents(site, "ben.okoro@example.com")[0]["ip"] is None


@pytest.mark.parametrize("name, status", [("mailchimp_unsubscribed_members_export.csv", "unsubscribed"),
                                          ("mailchimp_cleaned_members_export.csv", "bounced")])
def test_mailchimp_unsubscribed_and_cleaned_exports_stay_suppressed(site, runner, name, status):
    result = invoke(runner, site, "subscribers", "import", DATA / name, "--segment", "caregivers")
    assert result.exit_code == 0, result.output
    found = people(site)
    assert len(found) == 2 and {r["status"] for r in found.values()} == {status}
    assert all(consents(site, address) == [] for address in found)  # being imported as suppressed is no consent


def test_an_export_cannot_reactivate_someone_who_left(site, runner):
    """Unsubscribed here, subscribed in the old tool's export: stays unsubscribed."""
    site.store.upsert_subscribers([{"email": "ana.silva@example.org", "segment": "patients",
                                    "status": "unsubscribed"}])
    result = invoke(runner, site, "subscribers", "import", DATA / "mailchimp_subscribed_members_export.csv",
                    "--segment", "patients")
    assert "1 kept unsubscribed" in result.stdout
    assert people(site)["ana.silva@example.org"]["status"] == "unsubscribed"
    assert consents(site, "ana.silva@example.org") == []


@pytest.mark.parametrize("name, label, statuses, bad", [
    ("listmonk_subscribers.csv", "listmonk",
     {"ivy.chen@example.org": "active", "jon.ruiz@example.com": "unsubscribed", "kai.novak@example.net": "unsubscribed"},
     "line 5: created_at: 'yesterday' is not a date-time"),
    ("substack_emails.csv", "Substack",
     {"mia.rossi@example.org": "active", "noah.berg@example.com": "active", "omar.haddad@example.net": "unsubscribed"},
     "line 5: email_disabled: 'maybe' is not one of false, true"),
    ("buttondown_subscribers.csv", "Buttondown",
     {"quinn.hale@example.org": "active", "rosa.vega@example.com": "pending", "sam.ode@example.net": "unsubscribed",
      "tara.ng@example.org": "complained"},
     "line 6: subscriber_type: 'vip' is not one of churning, gifted,"),
    ("ghost_members.csv", "Ghost",
     {"vera.lind@example.org": "active", "will.park@example.com": "unsubscribed", "xena.roy@example.net": "active",
      "yuri.tan@example.org": "active"}, None),
])
def test_each_tools_export_maps_its_statuses(site, runner, name, label, statuses, bad):
    path = DATA / name
    result = invoke(runner, site, "subscribers", "import", path, "--segment", "clinicians", "--cadence", "monthly")
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert err[0] == f"{path}: {label} export (recognised by its header; --from to say otherwise)"
    assert err[1].startswith(f"{path}: ignored ")
    assert [line for line in err[2:]] == ([] if bad is None else [line for line in err[2:] if bad in line])
    assert len(err[2:]) == (0 if bad is None else 1)
    found = people(site)
    assert {a: r["status"] for a, r in found.items()} == statuses
    assert {(r["segment"], r["cadence"]) for r in found.values()} == {("clinicians", "monthly")}
    for address, status in statuses.items():
        records = consents(site, address)
        assert len(records) == (0 if status in SUPPRESSED else 1)
        assert all(r["basis"] == f"imported from {label}" and r["opted_in_at"] for r in records)


def test_listmonk_times_are_read_in_their_zone():
    with (DATA / "listmonk_subscribers.csv").open(newline="") as fh:
        result = read_import(fh, SEGMENTS, defaults={"segment": "patients"})
    times = {r["email"]: r["opted_in_at"] for r in result.good}
    assert times["ivy.chen@example.org"] == "2024-03-05T10:12:33+00:00"
    assert times["jon.ruiz@example.com"] == "2023-01-17T16:33:11+00:00"  # 22:03:11 +0530 IST


def test_a_ghost_note_over_two_lines_keeps_the_line_numbers_right(site, runner, tmp_path):
    broken = tmp_path / "members.csv"
    text = (DATA / "ghost_members.csv").read_text().replace("yuri.tan@example.org", "yuri.tan@")
    broken.write_text(text)
    result = invoke(runner, site, "subscribers", "import", broken, "--segment", "patients")
    assert f"{broken}: line 6: email: 'yuri.tan@'" in result.stderr  # the first record spans lines 2 and 3


def test_the_wrong_tool_is_refused_at_line_1(site, runner):
    path = DATA / "ghost_members.csv"
    result = invoke(runner, site, "subscribers", "import", path, "--from", "mailchimp", "--segment", "patients")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {path}: line 1: not a Mailchimp export: no column 'Email Address'"
    assert people(site) == {}


def test_an_export_without_a_segment_needs_one(site, runner):
    path = DATA / "substack_emails.csv"
    result = invoke(runner, site, "subscribers", "import", path)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {path}: line 1: no segment column; give --segment for this file"


def test_a_named_consent_basis_replaces_the_default(site, runner):
    invoke(runner, site, "subscribers", "import", DATA / "substack_emails.csv", "--segment", "patients",
           "--consent-basis", "Substack sign-up form, 2021 wording")
    assert consents(site, "mia.rossi@example.org")[0]["basis"] == "Substack sign-up form, 2021 wording"


def test_importing_the_same_export_twice_records_consent_once(site, runner):
    for _ in range(2):
        result = invoke(runner, site, "subscribers", "import", DATA / "ghost_members.csv", "--segment", "patients")
    assert result.stdout.strip() == "0 added, 4 updated, 0 rejected"
    assert len(consents(site, "vera.lind@example.org")) == 1


# -- --map and topics -----------------------------------------------------------------------------------

def test_any_csv_with_map(site, runner, tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text("E-mail,Full name,Signed,Shoe size\nzoe@example.org,Zoe Quinn,2025-03-01,38\n")
    result = invoke(runner, site, "subscribers", "import", path, "--map", "E-mail=email", "--map", "Full name=name",
                    "--map", "Signed=opted_in_at", "--segment", "caregivers", "--consent-basis", "paper form 2025")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"{path}: ignored 1 columns: Shoe size"
    assert people(site)["zoe@example.org"]["name"] == "Zoe Quinn"
    record, = consents(site, "zoe@example.org")
    assert (record["basis"], record["opted_in_at"]) == ("paper form 2025", "2025-03-01T00:00:00+00:00")


@pytest.mark.parametrize("args, message", [
    (["--map", "E-mail"], "--map: 'E-mail': write COLUMN=FIELD"),
    (["--map", "E-mail=shoe_size"], "--map: 'E-mail=shoe_size': write COLUMN=FIELD"),
    (["--map", "Mail=email"], "line 1: --map: no column 'Mail' (columns: E-mail, Full name)"),
])
def test_a_bad_map_is_refused_naming_it(site, runner, tmp_path, args, message):
    path = tmp_path / "list.csv"
    path.write_text("E-mail,Full name\nzoe@example.org,Zoe\n")
    result = invoke(runner, site, "subscribers", "import", path, *args, "--segment", "patients")
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert people(site) == {}


def test_a_file_nobody_recognises_says_what_to_do(site, runner, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("E-mail,Full name\nzoe@example.org,Zoe\n")
    result = invoke(runner, site, "subscribers", "import", path, "--segment", "patients")
    assert result.exit_code == 1
    assert "line 1: no email column; name the tool with --from" in result.stderr


def test_labels_mapped_to_topics_are_checked_against_the_sites_topics(topical, runner):
    path = DATA / "ghost_members.csv"
    result = invoke(runner, topical, "subscribers", "import", path, "--map", "labels=topics", "--segment", "patients")
    assert result.exit_code == 0, result.output
    assert f"{path}: line 5: topics: 'NMSOD' is not one of " in result.stderr
    found = people(topical)
    assert "xena.roy@example.net" not in found
    assert found["vera.lind@example.org"]["topics"] == ["MS", "NMOSD"]


def test_a_topic_typo_in_our_own_csv_is_a_bad_row_now(topical, runner, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("email,segment,topics\none@example.org,patients,MS\ntwo@example.org,patients,MS;NMSOD\n")
    result = invoke(runner, topical, "subscribers", "import", path)
    assert result.stderr.strip().startswith(f"{path}: line 3: topics: 'NMSOD' is not one of Autoimmune encephalitis")
    assert list(people(topical)) == ["one@example.org"]
    added = invoke(runner, topical, "subscribers", "add", "three@example.org", "--segment", "patients",
                   "--topic", "PLM")
    assert added.exit_code == 1 and "topics: 'PLM' is not one of" in added.stderr


def test_the_sites_topic_list_counts_when_it_has_one(make_site, runner, tmp_path):
    """topics.toml beside the site's segments.toml adds its topics (no summary needs to carry them)."""
    segments = tmp_path / "segments.toml"
    segments.write_text(Path(bootstrap.__file__).parent.parent.joinpath("subscribers", "segments.toml").read_text())
    (tmp_path / "topics.toml").write_text('[NMOSD]\naliases = ["Neuromyelitis optica"]\n\n[MS]\n')
    site = make_site(segments_file=str(segments))
    ok = invoke(runner, site, "subscribers", "add", "a@example.org", "--segment", "patients", "--topic", "nmosd")
    assert ok.exit_code == 0, ok.output
    assert people(site)["a@example.org"]["topics"] == ["NMOSD"]
    typo = invoke(runner, site, "subscribers", "add", "b@example.org", "--segment", "patients", "--topic", "NMSOD")
    assert "topics: 'NMSOD' is not one of MS, NMOSD" in typo.stderr


# -- consent through add and remove -----------------------------------------------------------------------

def test_add_records_its_consent_basis_and_remove_erases_it(site, runner):
    result = invoke(runner, site, "subscribers", "add", "ana@example.org", "--segment", "patients", "--confirmed",
                    "--consent-basis", "paper form 2025")
    assert result.stdout.strip() == "added ana@example.org (patients, weekly, active), consent recorded"
    record, = consents(site, "ana@example.org")
    assert (record["method"], record["basis"], record["opted_in_at"]) == ("cli", "paper form 2025", None)
    assert record["recorded_at"]
    subscriber_id = site.store.get_subscriber("ana@example.org")["id"]
    assert invoke(runner, site, "subscribers", "remove", "ana@example.org").exit_code == 0
    assert site.store.consent_records(subscriber_id) == []


def test_add_without_a_basis_records_nothing(site, runner):
    invoke(runner, site, "subscribers", "add", "ana@example.org", "--segment", "patients")
    assert consents(site, "ana@example.org") == []


def test_a_failed_import_leaves_neither_people_nor_consent(site, monkeypatch):
    """People and their consent are written in one transaction."""
    records = [{"email": "a@example.org", "segment": "patients", "status": "active",
                "consent": {"method": "import", "basis": "test"}},
               {"email": "b@example.org", "segment": "patients", "status": "active",
                "consent": {"method": "carrier pigeon", "basis": "test"}}]
    with pytest.raises(ValueError, match="method: 'carrier pigeon'"):
        site.store.upsert_subscribers_with_consent(records)
    assert site.store.subscribers() == []
    assert site.store.query("SELECT COUNT(*) AS n FROM consent_records")[0]["n"] == 0


# -- pieces --------------------------------------------------------------------------------------------

def test_detection_needs_the_whole_signature():
    assert detect(["Email Address", "MEMBER_RATING", "OPTIN_TIME"]).name == "mailchimp"
    assert detect(["email", "name", "segment"]) is None
    assert detect(["email", "subscribed_to_emails"]) is None


def test_parse_map_and_times():
    assert parse_map(["Work e-mail=email", "a=b=name"]) == {"Work e-mail": "email", "a=b": "name"}
    assert parse_time("2018-02-12 10:54:27", "OPTIN_TIME") == "2018-02-12T10:54:27+00:00"
    assert parse_time("2023-08-27T15:06:27.713Z", "created_at") == "2023-08-27T15:06:27+00:00"
    assert parse_time("", "created_at") is None
    with pytest.raises(SubscriberError, match=r"^OPTIN_TIME: 'soon' is not a date-time$"):
        parse_time("soon", "OPTIN_TIME")


# -- property: rows of these layouts ---------------------------------------------------------------------

#: For each layout: its header, how a row is built from (email, name, status word), its status vocabulary
#: and which words are suppressed. Mailchimp's status is the file's kind, so each kind is its own layout here.
def _mailchimp(kind_columns: list[str]) -> list[str]:
    return ["Email Address", "First Name", "Last Name", "MEMBER_RATING", "OPTIN_TIME", "CONFIRM_TIME",
            *kind_columns, "TAGS"]


LAYOUT_CASES = {
    "mailchimp-subscribed": (_mailchimp([]), {"": "active"}),
    "mailchimp-unsubscribed": (_mailchimp(["UNSUB_TIME"]), {"": "unsubscribed"}),
    "mailchimp-cleaned": (_mailchimp(["CLEAN_TIME"]), {"": "bounced"}),
    "listmonk": (["uuid", "email", "name", "attributes", "status", "created_at", "updated_at"],
                 {"enabled": "active", "disabled": "unsubscribed", "blocklisted": "unsubscribed"}),
    "substack": (["email", "active_subscription", "expiry", "plan", "email_disabled", "created_at"],
                 {"false": "active", "": "active", "true": "unsubscribed"}),
    "buttondown": (["email", "creation_date", "notes", "metadata", "tags", "subscriber_type"],
                   {"regular": "active", "unactivated": "pending", "unsubscribed": "unsubscribed",
                    "removed": "unsubscribed", "spammy": "complained"}),
    "ghost": (["id", "email", "name", "note", "subscribed_to_emails", "complimentary_plan", "created_at",
               "deleted_at", "labels"], {"true": "active", "false": "unsubscribed"}),
}
STATUS_COLUMN = {"listmonk": "status", "substack": "email_disabled", "buttondown": "subscriber_type",
                 "ghost": "subscribed_to_emails"}
EMAIL_COLUMN = {"mailchimp": "Email Address"}

addresses = st.one_of(st.emails(), st.text(max_size=30))
cells = st.text(max_size=40)
rows_strategy = st.lists(st.tuples(addresses, cells, st.one_of(st.sampled_from(
    ["enabled", "disabled", "blocklisted", "true", "false", "regular", "unsubscribed", "spammy", "unactivated", ""]),
    cells), cells), min_size=1, max_size=8)


@given(case=st.sampled_from(sorted(LAYOUT_CASES)), rows=rows_strategy,
       extra=st.lists(st.text(min_size=1, max_size=12), max_size=3, unique=True))
def test_rows_of_any_layout_never_crash_and_suppressed_never_becomes_active(case, rows, extra):
    header, vocabulary = LAYOUT_CASES[case]
    tool = case.split("-")[0]
    extra = [c for c in extra if c not in header and c.strip() and "\x00" not in c]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header + extra)
    starts, expected_status = [], []
    for address, name, status_word, filler in rows:
        row = dict.fromkeys(header + extra, filler)
        row[EMAIL_COLUMN.get(tool, "email")] = address
        row.update({k: name for k in ("name", "First Name") if k in row})
        for k in ("created_at", "creation_date", "OPTIN_TIME", "CONFIRM_TIME", "updated_at", "UNSUB_TIME",
                  "CLEAN_TIME", "deleted_at", "TAGS", "labels", "tags"):
            if k in row:
                row[k] = ""
        if tool in STATUS_COLUMN:
            row[STATUS_COLUMN[tool]] = status_word
        expected_status.append(vocabulary.get(status_word if tool in STATUS_COLUMN else ""))
        starts.append(sum(1 for _ in io.StringIO(buffer.getvalue())) + 1)  # the line the record starts on
        writer.writerow([row[c] for c in header + extra])
    buffer.seek(0)
    try:
        result = read_import(buffer, SEGMENTS, tool=tool, defaults={"segment": "patients"})
    except SubscriberError as exc:  # csv.writer leaves a bare CR unquoted: such a header is not CSV
        assert "\r" in "".join(extra) and str(exc).startswith("csv: line 1: not CSV")
        return
    assert isinstance(result, ImportResult) and result.layout is LAYOUTS[tool]

    assert len(result.good) + len(result.bad) == len(rows)  # every row accounted for, once
    assert all(line in starts for line, _ in result.bad)
    assert all(reason.split(":")[0] for _, reason in result.bad)
    good = iter(result.good)
    bad_lines = {line for line, _ in result.bad}
    for start, wanted in zip(starts, expected_status):
        if start in bad_lines:
            continue
        record = next(good)
        assert wanted is not None, "a status outside the tool's vocabulary was accepted"
        assert record["status"] == wanted
        if wanted in SUPPRESSED:
            assert record["status"] != "active"


# -- the editors' search index after an import ---------------------------------------------------------

def search_index(store) -> dict:
    """What the search index holds (every trigram of every address, where), the SQL of every trigger, and
    the index's own shadow tables byte for byte."""
    store.conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_terms USING fts5vocab(main, subscriber_search, "
                       "instance)")
    return {"terms": store.query("SELECT term, doc, offset FROM temp.search_terms ORDER BY term, doc, offset"),
            "triggers": store.query("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"),
            **{table: store.query(f"SELECT * FROM {table} ORDER BY 1")
               for table in ("subscriber_search_data", "subscriber_search_idx", "subscriber_search_docsize",
                             "subscriber_search_config")}}


def rebuilt_terms(store) -> list[dict]:
    """The index's terms as FTS5's 'rebuild' would make them from the table (in a transaction undone after)."""
    store.conn.execute("BEGIN")
    try:
        store.conn.execute("INSERT INTO subscriber_search (subscriber_search) VALUES ('rebuild')")
        return store.query("SELECT term, doc, offset FROM temp.search_terms ORDER BY term, doc, offset")
    finally:
        store.conn.execute("ROLLBACK")


def numbered_people(path: Path, rows: range, bad_at: int | None = None, renamed: str = "") -> Path:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("email,name,segment\n")
        for i in rows:
            email = "not-an-address" if i == bad_at else f"reader.{i}@example{i % 7}.org"
            fh.write(f"{email},{renamed}Reader {i},{SEGMENTS[i % 3]}\n")
    return path


def test_the_search_index_after_an_import_is_the_one_a_rebuild_gives(site, runner, tmp_path):
    """Its triggers are dropped during the import and the new rows indexed at the end: the index holds what
    FTS5 would build from the table, the triggers are back as they were, and search finds old, updated and
    new rows alike (a few thousand rows: more than one chunk)."""
    invoke(runner, site, "subscribers", "import", numbered_people(tmp_path / "first.csv", range(0, 2500)))
    before = search_index(site.store)
    result = invoke(runner, site, "subscribers", "import",
                    numbered_people(tmp_path / "second.csv", range(2000, 4600), renamed="Dr "))
    assert result.stdout.strip() == "2100 added, 500 updated, 0 rejected"
    after = search_index(site.store)
    assert after["triggers"] == before["triggers"]
    assert after["terms"] == rebuilt_terms(site.store)
    assert len({t["doc"] for t in after["terms"]}) == 4600
    site.store.query("INSERT INTO subscriber_search (subscriber_search, rank) VALUES ('integrity-check', 1)")
    hashsize = {r["k"]: r["v"] for r in after["subscriber_search_config"]}.get("hashsize")
    assert hashsize in (None, 1024 * 1024)  # FTS5's default, as before the import
    for text, expected in (("reader.17@", ["reader.17@example3.org"]), ("reader.2222@", ["reader.2222@example3.org"]),
                           ("er.4599@exa", ["reader.4599@example0.org"])):
        assert [r["email"] for r in site.store.search_subscribers(text)] == expected
    assert site.store.search_subscribers("reader.2222@")[0]["name"] == "Dr Reader 2222"
    # the triggers work again: a sign-up after the import is found at once
    site.store.upsert_subscribers([{"email": "late.comer@example.org", "segment": "patients"}])
    assert [r["email"] for r in site.store.search_subscribers("comer")] == ["late.comer@example.org"]


def test_a_strict_import_refused_leaves_the_table_and_the_index_exactly_as_they_were(site, runner, tmp_path):
    invoke(runner, site, "subscribers", "import", numbered_people(tmp_path / "first.csv", range(0, 1000)))
    table = site.store.query("SELECT * FROM subscribers ORDER BY id")
    index = search_index(site.store)
    path = numbered_people(tmp_path / "second.csv", range(500, 6000), bad_at=5990, renamed="Dr ")
    result = invoke(runner, site, "subscribers", "import", path, "--strict")
    assert result.exit_code == 1
    assert f"{path}: line 5492: email: 'not-an-address'" in result.stderr
    assert result.stderr.strip().endswith("1 bad rows; nothing imported (--strict)")
    assert site.store.query("SELECT * FROM subscribers ORDER BY id") == table
    assert search_index(site.store) == index


def test_a_file_that_stops_being_utf8_half_way_leaves_the_table_and_the_index_as_they_were(site, runner, tmp_path):
    """The error comes from the reader after thousands of rows were written (and the triggers dropped)."""
    invoke(runner, site, "subscribers", "import", numbered_people(tmp_path / "first.csv", range(0, 1000)))
    table, index = site.store.query("SELECT * FROM subscribers ORDER BY id"), search_index(site.store)
    path = numbered_people(tmp_path / "second.csv", range(500, 9000))
    path.write_bytes(path.read_bytes() + b"caf\xe9@example.org,Caf\xe9,patients\n")  # Latin-1, not UTF-8
    result = invoke(runner, site, "subscribers", "import", path)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {path}: encoding: not UTF-8 text (save the CSV as UTF-8)"
    assert site.store.query("SELECT * FROM subscribers ORDER BY id") == table
    assert search_index(site.store) == index


def _import_peak_rss_kb(make_site, rows: int, tmp_path) -> int:
    """Import `rows` subscribers (a few bad, a few repeated) in a fresh interpreter; its peak RSS."""
    import subprocess
    import sys
    ctx = make_site(f"site{rows}")
    path = tmp_path / f"people{rows}.csv"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("email,name,segment,cadence,topics,status\n")
        for i in range(rows):
            email = "not-an-address" if i % 5000 == 17 else f"reader{i % (rows - 3)}@example.org"
            fh.write(f"{email},Reader {i},{('patients', 'caregivers', 'clinicians')[i % 3]},weekly,,active\n")
    code = ("import resource, sys; from newsletter.cli import cli\n"
            "try:\n    cli.main(sys.argv[1:], standalone_mode=False)\nfinally:\n"
            "    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, "--config", str(ctx.config.source), "subscribers", "import",
                           str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    bad = rows // 5000 + (1 if rows % 5000 > 17 else 0)
    assert f"{rows - 3 - bad} added, 0 updated, {3 + bad} rejected" in done.stdout
    assert done.stderr.count("already on line") == 3
    assert len(ctx.store.subscribers()) == rows - 3 - bad
    return int(done.stderr.rsplit("PEAK", 1)[1].split()[0])


def test_an_import_streams_peak_memory_at_100k_rows_within_1_5x_of_10k(make_site, tmp_path):
    """Rows are read, checked and written in chunks: memory does not grow with the file (not a timing)."""
    small = _import_peak_rss_kb(make_site, 10_000, tmp_path)
    large = _import_peak_rss_kb(make_site, 100_000, tmp_path)
    assert large <= 1.5 * small, (small, large)
