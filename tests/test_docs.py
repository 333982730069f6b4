"""Docs do not drift: every command has help, README's tour names real commands, every setting is in its table."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.settings import SETTINGS

README = Path(__file__).resolve().parent.parent / "README.md"
GLOBAL_OPTIONS_WITH_VALUE = {"--config"}
STOP_TOKENS = {"|", "||", "&&", ";", ">", ">>", "2>", "<", "\\"}


def walk(command: click.Command = cli, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):  # through click's own lookup: the top group loads commands lazily
        context = click.Context(command)
        for name in sorted(command.list_commands(context)):
            yield from walk(command.get_command(context, name), path + (name,))


COMMANDS = list(walk())


def readme_text() -> str:
    if not README.exists():
        pytest.fail("README.md is missing: issue 2 asks for it (tour, settings table, architecture)")
    return README.read_text(encoding="utf-8")


# -- help text -------------------------------------------------------------------------

@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "newsletter" for p, _ in COMMANDS])
def test_every_command_has_help_text(path, command):
    assert (command.help or "").strip(), f"newsletter {' '.join(path)} has no help text"
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first_line = command.help.strip().splitlines()[0]
    assert " ".join(first_line.split()[:4]) in " ".join(result.stdout.split())


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "newsletter" for p, _ in COMMANDS])
def test_every_option_has_help_text(path, command):
    missing = [p.opts[0] for p in command.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
               and p.name not in ("help", "version")]
    assert not missing, f"newsletter {' '.join(path)}: options without help: {', '.join(missing)}"


def test_the_commands_the_issue_names_exist():
    names = {" ".join(p) for p, _ in COMMANDS}
    for required in ("init", "demo", "preview", "summaries import", "summaries list", "subscribers add",
                     "subscribers import", "subscribers export", "subscribers list", "subscribers remove",
                     "digest run"):
        assert required in names, required


# -- README --------------------------------------------------------------------------------

def code_in(markdown: str) -> list[str]:
    """Fenced blocks, indented blocks and inline code spans."""
    fenced = re.findall(r"^(```|~~~)[^\n]*\n(.*?)^\1", markdown, flags=re.S | re.M)
    blocks = [body for _, body in fenced]
    prose = re.sub(r"^(```|~~~)[^\n]*\n.*?^\1", "", markdown, flags=re.S | re.M)
    indented = [line.strip() for line in prose.splitlines() if line.startswith(("    ", "\t"))]
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith(("    ", "\t")))
    spans = re.findall(r"`([^`\n]+)`", prose)
    return blocks + indented + spans


def invocations(markdown: str) -> list[list[str]]:
    """Each `newsletter ...` command line in the README's code, as tokens after `newsletter`."""
    found = []
    for code in code_in(markdown):
        for line in code.splitlines():
            for match in re.finditer(r"(?:^|[;&|(]\s*|\$\s+|bin/)newsletter[ \t]+(.*)", line):
                tokens = []
                for token in match.group(1).split():
                    if token in STOP_TOKENS or token.startswith(("#", ">")):
                        break
                    tokens.append(token)
                found.append(tokens)
    return found


def resolve(tokens: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """(command path, command, leftover tokens); raises LookupError for a name that is no command."""
    path: list[str] = []
    command: click.Command = cli
    rest = list(tokens)
    while rest and isinstance(command, click.Group):
        token = rest[0]
        if token.startswith("-"):
            rest.pop(0)
            if token in GLOBAL_OPTIONS_WITH_VALUE and rest:
                rest.pop(0)
            continue
        sub = command.get_command(click.Context(command), token)
        if sub is None:
            raise LookupError(f"newsletter {' '.join(path + [token])}: no such command")
        path.append(token)
        command = sub
        rest.pop(0)
    return path, command, rest


def test_readme_invocation_parser_finds_commands():
    sample = "Run:\n\n```sh\n$ newsletter --config x.toml digest run --cadence weekly  # cron\n" \
             ".venv/bin/newsletter demo && open newsletter-demo\n```\n\n    newsletter init mysite && cd mysite\n\n" \
             "then `newsletter summaries list`; a newsletter for readers (`newsletter.toml`)."
    assert invocations(sample) == [["--config", "x.toml", "digest", "run", "--cadence", "weekly"], ["demo"],
                                   ["init", "mysite"], ["summaries", "list"]]
    assert resolve(["--config", "x.toml", "digest", "run", "--now", "X"])[0] == ["digest", "run"]
    with pytest.raises(LookupError):
        resolve(["digest", "fly"])


def test_every_command_in_the_readme_exists_and_parses_with_help():
    text = readme_text()
    calls = [tokens for tokens in invocations(text) if tokens]
    assert calls, "README.md names no `newsletter ...` command in its code"
    problems, seen = [], set()
    for tokens in calls:
        try:
            path, command, rest = resolve(tokens)
        except LookupError as exc:
            problems.append(str(exc))
            continue
        seen.add(" ".join(path))
        result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
        if result.exit_code != 0:
            problems.append(f"newsletter {' '.join(path)} --help exited {result.exit_code}")
        known = {opt for p in command.params + cli.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
        for token in rest:
            option = token.strip("[]()").split("=", 1)[0]
            if option.startswith("-") and option not in known and option not in ("-h", "--help"):
                problems.append(f"newsletter {' '.join(path)}: no option {option}")
    assert not problems, "\n".join(problems)
    # The tour covers what the issue asks for: import, subscribers, digest, preview, and the demo.
    for required in ("demo", "summaries import", "digest run", "preview"):
        assert required in seen, f"README.md's tour does not show `newsletter {required}`"
    assert any(s.startswith("subscribers ") for s in seen), "README.md's tour shows no `newsletter subscribers ...`"


def test_every_setting_is_in_the_readme_settings_table():
    text = readme_text()
    table = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("|"))
    assert table, "README.md has no settings table"
    missing = [s.name for s in SETTINGS if not re.search(rf"(?<![\w-]){re.escape(s.name)}(?![\w-])", table)]
    assert not missing, f"settings missing from README.md's table: {', '.join(missing)}"
