"""`newsletter bench`: the whole weekly digest at scale, in a scratch database."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--subscribers", "sizes", type=int, multiple=True, default=(10_000,), show_default=True,
              help="Number of subscribers (repeat for several sizes, e.g. 10000 100000 1000000).")
@click.option("--messenger", "messengers",
              type=click.Choice(["counting", "json", "sendgrid", "floor", "smtp", "smtp-pool"]), multiple=True,
              help="Messenger to measure (repeat; default: all, the smtp ones only up to 20,000). smtp-pool uses "
                   "4 connections; floor is the whole run's floor, the same work written by hand (bench_run_floor).")
@click.option("--smtp-server", type=click.Choice(["aiosmtpd", "sink", "postfix"]), default="aiosmtpd",
              show_default=True,
              help="What the smtp cases send to: aiosmtpd; sink, a server that only reads and counts (the "
                   "client's own ceiling); or a Postfix the bench starts on loopback "
                   "(STARTTLS with a self-signed certificate, discard transport; needs root and Debian's postfix).")
@click.option("--smtp-security", type=click.Choice(["none", "starttls"]), default="none", show_default=True,
              help="TLS for the smtp cases against aiosmtpd or the sink (Postfix always takes STARTTLS).")
@click.option("--workers", "workers", type=click.IntRange(min=1), multiple=True, default=(1,), show_default=True,
              metavar="N", help="Worker processes of the digest run, and of the floor (repeat to compare, e.g. "
                   "--workers 1 --workers 2).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results here.")
@click.option("--search", is_flag=True, help="Measure the editors' subscriber search instead (at each --subscribers).")
@click.option("--import", "import_", is_flag=True,
              help="Measure `subscribers import` of a CSV of that many rows instead (at each --subscribers).")
def bench(sizes: tuple[int, ...], messengers: tuple[str, ...], smtp_server: str, smtp_security: str,
          workers: tuple[int, ...], json_out: Path | None, search: bool, import_: bool) -> None:
    """Measure the whole weekly digest at scale in a scratch database.

    Each case (size, messenger, workers) runs in a fresh process: generate subscribers
    across segments, cadences and topics, add 10 recent summaries, run the
    weekly digest, and report wall and CPU time, peak RSS, recipients per
    second, MJML and premailer compiles, ledger write time and ledger bytes per
    recipient. The json messenger writes the SendGrid request bodies without
    sending them, timing the messenger's encoder and the floor (the least any
    correct writer must do: each recipient's own strings quoted and copied
    once); "x floor" is the json encoder's, and the sendgrid messenger's, time
    over that floor at the same size. The floor case runs the whole weekly
    send as the least code that keeps every guarantee (ledger row first,
    claim with the active check committed before each request, each answer
    recorded, two tokens per recipient, valid bodies over one keep-alive
    connection) to the same sink; "x run floor" is a sendgrid row's wall time
    over the floor's with as many workers. Sinks for sendgrid (HTTP) and smtp
    run on loopback in their own process.

    With --workers N the digest run sends through N worker processes (and the
    floor through N of its own, each its own run of every issue's ids): wall
    time is the whole run's (starting the workers included), cpu s, compiles
    and ledger s add up every process, peak RSS MB is the parent's and
    "worker RSS MB" each worker's own (getrusage in each process), and the
    sendgrid sink's count is shown beside the recipients recorded sent.

    With --search, it times the editors' subscriber search instead: the
    searches an editor types (prefixes, substrings, filters, the next page)
    over N varied addresses, with the size and insert cost of the search index.

    With --import, it runs `newsletter subscribers import` on a CSV of N varied
    rows (every row valid), each run in a fresh process: into a new site (every
    row added), then the same file again (every row an update); wall and CPU
    time of the whole command, peak RSS, rows per second.

    \b
    Examples:
        newsletter bench --subscribers 10000 --subscribers 100000 --messenger counting
        newsletter bench --subscribers 5000 --messenger smtp --smtp-server sink
        newsletter bench --subscribers 5000 --messenger smtp --smtp-server postfix
        newsletter bench --subscribers 100000 --messenger sendgrid --messenger floor --workers 1 --workers 2
        newsletter bench --search --subscribers 100000
        newsletter bench --import --subscribers 100000 --subscribers 1000000
    """
    from rich.console import Console
    from rich.table import Table

    from .. import bench as bench_mod

    results = []
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log file gets the whole table
    console.print(f"machine: {bench_mod.machine()}")
    if search:
        _bench_search(console, sizes, json_out)
        return
    if import_:
        _bench_import(console, sizes, json_out)
        return
    for n, name, count in bench_mod.cases(sizes, messengers, workers):
        with console.status(f"{n:,} subscribers, {name}, {count} worker(s)..."):
            results.append(bench_mod.run_isolated(n, name, smtp_server, smtp_security, count))
    floors: dict[tuple[int, int], float] = {}  # (size, workers) -> floor s; a size's floor also serves other counts
    for r in sorted(results, key=lambda r: r.workers != 1):
        if r.floor_s:
            floors.setdefault((r.subscribers, r.workers), r.floor_s)
            floors.setdefault((r.subscribers, 0), r.floor_s)
    run_floors = {(r.subscribers, r.workers): r.wall_s for r in results if r.messenger == "floor"}
    table = Table("subscribers", "messenger", "server", "workers", "recipients", "sink", "wall s", "cpu s",
                  "peak RSS MB", "worker RSS MB", "recipients/s", "MJML", "premailer", "render s", "ledger s",
                  "messenger s", "requests", "encode s", "floor s", "x floor", "x run floor", "ledger B/recipient")
    for r in results:
        # json: encode_payload against the floor; sendgrid: the whole messenger (writing and posting) against it
        spent = r.json_encode_s if r.messenger == "json" else r.messenger_s if r.messenger == "sendgrid" else None
        floor = floors.get((r.subscribers, r.workers)) or floors.get((r.subscribers, 0))
        table.add_row(f"{r.subscribers:,}", r.messenger, r.server, str(r.workers), f"{r.recipients:,}",
                      "" if r.sink_recipients is None else f"{r.sink_recipients:,}", f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}",
                      f"{r.peak_rss_mb:.0f}", ", ".join(f"{m:.0f}" for m in r.worker_peak_rss_mb or []),
                      f"{r.recipients_per_s:,}", str(r.mjml_compiles),
                      str(r.premailer_compiles), f"{r.render_s:.2f}", f"{r.ledger_write_s:.2f}",
                      f"{r.messenger_s:.2f}", str(r.requests),
                      "" if r.json_encode_s is None else f"{r.json_encode_s:.2f}",
                      "" if r.floor_s is None else f"{r.floor_s:.2f}",
                      f"{spent / floor:.2f}" if spent is not None and floor else "",
                      f"{r.wall_s / run_floors[r.subscribers, r.workers]:.2f}"
                      if r.messenger == "sendgrid" and run_floors.get((r.subscribers, r.workers)) else "",
                      f"{r.ledger_bytes_per_recipient:.0f}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"machine": bench_mod.machine(), "results": bench_mod.as_dicts(results)},
                                       indent=2))


def _bench_search(console, sizes: tuple[int, ...], json_out: Path | None) -> None:
    from dataclasses import asdict

    from rich.table import Table

    from .. import bench_search

    report = []
    for n in sizes:
        with console.status(f"search at {n:,} subscribers..."):
            facts, timings = bench_search.run(n)
        console.print(f"{n:,} subscribers: inserted in {facts['insert_s']:.2f} s; search index {facts['index_mb']:.1f} "
                      f"MB of a {facts['database_mb']:.1f} MB database")
        table = Table("search", "results (page of 51)", "median ms", "next page ms")
        for t in timings:
            table.add_row(t.label, str(t.results), f"{t.median_ms:.2f}",
                          "" if t.next_page_ms is None else f"{t.next_page_ms:.2f}")
        console.print(table)
        report.append({**facts, "searches": [asdict(t) for t in timings]})
    if json_out:
        json_out.write_text(json.dumps({"search": report}, indent=2))


def _bench_import(console, sizes: tuple[int, ...], json_out: Path | None) -> None:
    from dataclasses import asdict

    from rich.table import Table

    from .. import bench_import

    runs = []
    for n in sizes:
        with console.status(f"import of {n:,} rows..."):
            runs += bench_import.run(n)
    table = Table("rows", "case", "added", "updated", "rejected", "wall s", "cpu s", "peak RSS MB", "rows/s")
    for r in runs:
        table.add_row(f"{r.rows:,}", r.case, f"{r.added:,}", f"{r.updated:,}", f"{r.rejected:,}", f"{r.wall_s:.2f}",
                      f"{r.cpu_s:.2f}", f"{r.peak_rss_mb:.0f}", f"{r.rows_per_s:,}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"machine": _machine(), "import": [asdict(r) for r in runs]}, indent=2))


def _machine() -> str:
    from .. import bench as bench_mod
    return bench_mod.machine()
