"""The layout holds: read the package's code with `ast` only (nothing is imported) and check its arrows.

- no import cycle between modules of the package;
- no arrow from a lower stage to a higher one (the layers below), and messengers see only the model;
- blueprints never import the module that creates the app;
- SQL, `sqlite3` and `sqlite_utils` only under store/;
- network and outbox libraries only under messengers/ and sources/, except where ALLOWED says why.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"

#: Lowest first. A module may import its own layer or lower ones, never a higher one.
LAYERS = [
    {"model", "roles", "settings", "segments", "topics", "tokens", "progress", "config_edit", "setting_values",
     "readability"},
    {"store", "sources", "select"},
    {"context", "render", "messengers"},
    {"dispatch", "feedback"},
    {"workers"},
    {"digest"},
    {"lifecycle", "preview", "pull", "report", "welcome", "twofactor", "retention", "notices"},
    {"bootstrap", "bench", "bench_floor", "bench_import", "bench_search", "bench_sinks", "bench_postfix", "bench_run_floor"},
    {"cli", "web", "__main__"},
]
NETWORK = ("smtplib", "mailbox", "imaplib", "poplib", "socket", "http.client", "http.server", "urllib.request",
           "httpx", "requests", "sendgrid", "python_http_client", "aiosmtpd")
#: module -> (libraries it may use outside messengers/ and sources/, why)
ALLOWED = {
    "newsletter.web.app": (("sendgrid",), "sendgrid.EventWebhook only verifies webhook signatures; it opens "
                                          "no connection"),
    "newsletter.bench": (("urllib.request",), "the benchmark asks its loopback sink what it counted"),
    "newsletter.bench_run_floor": (("http.client",), "the floor posts its bodies to the benchmark's loopback sink"),
    "newsletter.bench_sinks": (("socket", "http.server", "aiosmtpd"),
                               "the benchmark's own loopback sinks for the messengers to send into"),
}
#: module -> why it may run SQL outside store/ (on the benchmark's scratch database only)
SQL_ALLOWED = {"newsletter.bench_run_floor": "the benchmark's floor: the store's own statements, written as the "
                                            "least code that keeps the guarantees, to measure the store against"}
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|BEGIN|COMMIT|ROLLBACK)\b")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports(name: str) -> list[str]:
    """Every module this one imports, anywhere in it (a deferred import is still an arrow)."""
    found = []
    base = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import mailer` imports the submodule mailer (its package is the importer's own parent)
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            found += submodules
            if node.module or len(submodules) < len(node.names):
                found.append(target)
    return found


def internal_imports(name: str) -> set[str]:
    return {target for target in imports(name) if target in MODULES and target != name}


def stage(name: str) -> str:
    """The top-level room a module lives in: newsletter.store.ledger -> store."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(name: str) -> int:
    room = stage(name)
    for index, rooms in enumerate(LAYERS):
        if room in rooms:
            return index
    raise AssertionError(f"{name}: not in any layer of test_architecture.LAYERS; place it there")


def test_every_module_is_placed_in_a_layer():
    for name in MODULES:
        if name != "newsletter" and stage(name) != "sample":
            layer(name)


def test_no_import_cycles():
    graph = {name: internal_imports(name) for name in MODULES}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_arrow_from_a_lower_stage_to_a_higher_one():
    wrong = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
             for name in MODULES if name != "newsletter" and stage(name) != "sample"
             for target in internal_imports(name) if target != "newsletter" and layer(target) > layer(name)]
    assert not wrong, "\n".join(wrong)


def test_messengers_import_only_the_model_of_ours():
    wrong = [f"{name} imports {target}" for name in MODULES if stage(name) == "messengers"
             for target in internal_imports(name) if stage(target) not in ("messengers", "model")]
    assert not wrong, "\n".join(wrong)


def test_blueprints_never_import_the_app_factory():
    blueprints = [name for name, tree in TREES.items() if stage(name) == "web" and any(
        isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Blueprint" for node in ast.walk(tree))]
    assert {"newsletter.web.public", "newsletter.web.editors", "newsletter.web.webhooks"} <= set(blueprints)
    for name in blueprints:
        bad = {t for t in imports(name) if t in ("newsletter.web.app", "newsletter.web")}
        assert not bad, f"{name} imports {bad}: blueprints reach the app through web/state.py"


def string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_sql_and_the_database_libraries_only_under_store():
    wrong = []
    for name, tree in TREES.items():
        if stage(name) == "store" or name in SQL_ALLOWED:
            continue
        wrong += [f"{name}: imports {t}" for t in imports(name) if t.split(".")[0] in ("sqlite3", "sqlite_utils")]
        wrong += [f"{name}:{line}: SQL {text.strip()[:40]!r}" for line, text in string_constants(tree)
                  if SQL.match(text)]
    assert not wrong, "\n".join(wrong)


def test_the_check_for_sql_would_see_sql():
    """The SQL pattern finds the store's own statements (so the test above can fail)."""
    found = [text for name, tree in TREES.items() if stage(name) == "store"
             for _, text in string_constants(tree) if SQL.match(text)]
    assert len(found) > 20


def test_network_and_outbox_libraries_only_in_messengers_and_sources():
    wrong = []
    for name in MODULES:
        if stage(name) in ("messengers", "sources"):
            continue
        allowed = ALLOWED.get(name, ((), ""))[0]
        for target in imports(name):
            library = next((lib for lib in NETWORK if target == lib or target.startswith(lib + ".")), None)
            if library and library not in allowed:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_each_allowed_exception_is_still_needed():
    for name, (libraries, why) in ALLOWED.items():
        assert why
        used = {lib for lib in libraries for t in imports(name) if t == lib or t.startswith(lib + ".")}
        assert used == set(libraries), f"{name}: no longer uses {set(libraries) - used}: drop it from ALLOWED"


def test_every_module_says_what_its_job_is():
    missing = [name for name, tree in TREES.items() if stage(name) != "sample" and not ast.get_docstring(tree)]
    assert not missing, f"modules without a docstring: {missing}"


def test_every_module_is_under_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) >= 400}
    assert not long, long
