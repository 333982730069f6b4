"""Opening the Maildir outbox: a new one made by several processes at once (worker processes of one run), one
left half-made, and a wrong path refused. Real folders and real processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from newsletter.messengers.maildir import MaildirMessenger
from newsletter.model import FatalSendError, Notice, Sender

SENDER = Sender("digest@example.org", "MS Research Digest")


def _open_and_send(outbox: str, start: multiprocessing.synchronize.Event, answers: multiprocessing.Queue) -> None:
    start.wait()
    try:
        messenger = MaildirMessenger(outbox, SENDER)
        answers.put(messenger.send_notice(Notice("reader@example.org", "Hello", "Text.")).status)
    except FatalSendError as exc:
        answers.put(str(exc))


def test_processes_opening_a_new_outbox_at_once_all_deliver(tmp_path):
    """Eight processes released together on an outbox nobody made yet, twenty times: every one opens it and
    delivers (before, mailbox.Maildir's own create failed one of them on "File exists")."""
    spawn = multiprocessing.get_context("spawn")
    for round_ in range(20):
        outbox = tmp_path / f"outbox{round_}"
        start, answers = spawn.Event(), spawn.Queue()
        workers = [spawn.Process(target=_open_and_send, args=(str(outbox), start, answers)) for _ in range(8)]
        for w in workers:
            w.start()
        start.set()
        got = [answers.get(timeout=60) for _ in workers]
        for w in workers:
            w.join(timeout=60)
        assert got == ["sent"] * 8, got
        assert len(list((outbox / "new").iterdir())) == 8


def test_an_outbox_folder_left_without_its_maildir_folders_gets_them_and_takes_mail(tmp_path):
    """What a process that made the folder but not yet tmp/, new/ and cur/ leaves behind."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    outcome = MaildirMessenger(outbox, SENDER).send_notice(Notice("reader@example.org", "Hello", "Text."))
    assert outcome.status == "sent", outcome.error
    assert sorted(p.name for p in outbox.iterdir()) == ["cur", "new", "tmp"]
    assert len(list((outbox / "new").iterdir())) == 1


@pytest.mark.parametrize("make", ["missing parent", "parent is a file", "outbox is a file"])
def test_a_wrong_outbox_path_is_refused_in_one_line_and_nothing_is_made(tmp_path, make):
    if make == "missing parent":
        outbox = tmp_path / "no-such-folder" / "outbox"
    elif make == "parent is a file":
        (tmp_path / "file").write_text("x")
        outbox = tmp_path / "file" / "outbox"
    else:
        outbox = tmp_path / "outbox"
        outbox.write_text("x")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(FatalSendError, match=rf"^maildir: cannot open the outbox {outbox}: "):
        MaildirMessenger(outbox, SENDER)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert "\n" not in str(Path(outbox))
