"""guardrails.toml: valid files build a guard, broken ones name the file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import guardrails as gr

CASES = '{"id": "sum", "input": "2+2", "expect": "4"}\n'

VALID = """
[guard]
margin = 0.05
case_timeout = 2
integrity_check_every = 10
on_silent_modification = "block"

[constraints]
frozen = ["/system_prompt"]
mutable = ["/answers", "/default"]
drift_budget = 0.5

[canaries]
files = ["cases.jsonl"]

[ledger]
path = "state/ledger.db"
blobs = "state/blobs"

[approval]
kinds = ["prompt"]
timeout = 60
"""


def write(tmp_path: Path, text: str, cases: str = CASES) -> Path:
    (tmp_path / "cases.jsonl").write_text(cases)
    path = tmp_path / "guardrails.toml"
    path.write_text(text)
    return path


def test_a_valid_file_builds_the_guard_it_describes(tmp_path: Path) -> None:
    """Every section of a valid file reaches the guard, with paths resolved from the file's folder."""
    guard = gr.Guard.from_config(write(tmp_path, VALID))
    assert guard.constraints.frozen == ("/system_prompt",)
    assert guard.constraints.drift_budget == 0.5
    assert guard.case_timeout == 2 and guard.on_silent_modification == "block"
    assert guard.approval == gr.ApprovalPolicy(kinds=("prompt",), timeout=60)
    assert isinstance(guard.ledger, gr.SQLiteLedger)
    assert guard.ledger.path == tmp_path / "state" / "ledger.db"
    assert [c.id for c in guard.canaries] == ["sum"]


BROKEN = [
    ("typo in a section key", VALID.replace("margin =", "margn ="),
     "unknown key 'guard.margn'; did you mean 'margin'?"),
    ("typo in a section name", VALID.replace("[approval]", "[aproval]"),
     "unknown key 'aproval'; did you mean 'approval'?"),
    ("unknown key with no close match", VALID.replace("[canaries]", "[canaries]\nzzz = 1"),
     "unknown key 'canaries.zzz'; allowed keys here: files"),
    ("margin above one", VALID.replace("margin = 0.05", "margin = 1.5"),
     "'guard.margin': Input should be less than or equal to 1"),
    ("negative margin", VALID.replace("margin = 0.05", "margin = -0.1"),
     "'guard.margin': Input should be greater than or equal to 0"),
    ("zero case timeout", VALID.replace("case_timeout = 2", "case_timeout = 0"),
     "'guard.case_timeout': Input should be greater than 0"),
    ("negative integrity schedule", VALID.replace("= 10\n", "= -1\n"),
     "'guard.integrity_check_every': Input should be greater than or equal to 0"),
    ("unknown silent-modification action",
     VALID.replace('"block"', '"ignore"'), "'guard.on_silent_modification': Input should be"),
    ("wrong type for frozen", VALID.replace('frozen = ["/system_prompt"]', 'frozen = "/x"'),
     "'constraints.frozen': Input should be a valid list"),
    ("frozen pointer without a slash", VALID.replace('"/system_prompt"', '"system_prompt"'),
     "[constraints]: 'frozen': Value error, 'system_prompt' is not a JSON Pointer"),
    ("negative drift budget", VALID.replace("drift_budget = 0.5", "drift_budget = -1"),
     "'constraints.drift_budget': Input should be greater than or equal to 0"),
    ("canaries section missing", VALID.replace('[canaries]\nfiles = ["cases.jsonl"]', ""),
     "'canaries' is required; add it"),
    ("no canary files", VALID.replace('files = ["cases.jsonl"]', "files = []"),
     "'canaries.files': List should have at least 1 item"),
    ("canary file missing", VALID.replace("cases.jsonl", "nope.jsonl"),
     "nope.jsonl: cannot read canary file"),
    ("approval timeout zero", VALID.replace("timeout = 60", "timeout = 0"),
     "'approval.timeout': Input should be greater than 0"),
    ("approval kinds not a list", VALID.replace('kinds = ["prompt"]', "kinds = 3"),
     "'approval.kinds': Input should be a valid list"),
    ("not TOML at all", "[guard\nmargin = ", "not valid TOML"),
    ("client factory without a colon", VALID + '\n[client]\nfactory = "pkg.module"\n',
     "'client.factory': Value error, 'pkg.module' is not 'package.module:callable'"),
]


@pytest.mark.parametrize(("label", "text", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_file_names_the_file_and_the_key(tmp_path: Path, label: str, text: str,
                                                 message: str) -> None:
    """Each broken configuration raises ConfigError naming the file and pointing at the bad key."""
    path = write(tmp_path, text)
    with pytest.raises(gr.ConfigError) as caught:
        gr.Guard.from_config(path)
    assert str(path) in str(caught.value) or path.name in str(caught.value)
    assert message in str(caught.value)


def test_a_malformed_case_file_names_its_line(tmp_path: Path) -> None:
    """A bad line in a canary file is reported with the file and line number."""
    path = write(tmp_path, VALID, cases=CASES + '{"input": "x", "expect": "y"}\n')
    with pytest.raises(gr.ConfigError, match=r"cases.jsonl:2: field 'id': Field required"):
        gr.Guard.from_config(path)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A configuration path that does not exist says so."""
    with pytest.raises(gr.ConfigError, match="cannot read the configuration"):
        gr.Guard.from_config(tmp_path / "absent.toml")


def test_policies_build_middleware_and_checks_in_order(tmp_path: Path) -> None:
    """[[policies]] entries become the guard's middleware and update checks, in order."""
    text = VALID + """
[[policies]]
plugin = "deny_list"
words = ["forbidden"]

[[policies]]
plugin = "invariants"
rules = [{pointer = "/default", op = "exists"}]
"""
    guard = gr.Guard.from_config(write(tmp_path, text))
    assert len(guard.middleware) == 1 and len(guard.checks) == 1


def test_an_unknown_plugin_lists_the_installed_ones(tmp_path: Path) -> None:
    """A policy naming no installed plugin says which entry and lists what is installed."""
    path = write(tmp_path, VALID + '\n[[policies]]\nplugin = "pi"\n')
    with pytest.raises(gr.ConfigError, match=r"policies\[0\] \(plugin 'pi'\): unknown plugin") as caught:
        gr.Guard.from_config(path)
    assert "Installed plugins:" in str(caught.value) and "pii" in str(caught.value)


def test_a_bad_plugin_setting_names_the_plugin_and_the_setting(tmp_path: Path) -> None:
    """A typo in a plugin's own settings is an error naming the plugin and the key."""
    path = write(tmp_path, VALID + '\n[[policies]]\nplugin = "pii"\nacton = "block"\n')
    with pytest.raises(gr.ConfigError, match="acton") as caught:
        gr.Guard.from_config(path)
    assert "pii" in str(caught.value)


def test_case_files_may_use_checkers_that_plugins_contribute(tmp_path: Path) -> None:
    """With the json_schema plugin configured, a case may expect {"json_schema": {...}}."""
    cases = CASES + ('{"id": "shape", "input": "x", "expect": {"json_schema": '
                     '{"type": "object", "required": ["a"]}}}\n')
    text = VALID + '\n[[policies]]\nplugin = "json_schema"\noutput_schema = {type = "string"}\n'
    guard = gr.Guard.from_config(write(tmp_path, text, cases=cases))
    checker = next(c for c in guard.canaries if c.id == "shape").expect
    assert checker.name == "json_schema"
    assert checker({"a": 1}) is True and checker({"b": 1}) is False


def test_the_decision_and_runner_sections_configure_the_gate(tmp_path: Path) -> None:
    """[decision] rule = "sequential" and [canaries] runner keys reach the guard."""
    text = VALID.replace('files = ["cases.jsonl"]', 'files = ["cases.jsonl"]\nconcurrency = 4\n'
                         'hidden_fraction = 0.5') + '\n[decision]\nrule = "sequential"\nmargin = 0.1\n'
    with pytest.warns(UserWarning, match="can never be accepted"):
        guard = gr.Guard.from_config(write(tmp_path, text))
    assert isinstance(guard.decision_rule, gr.SequentialRule)
    assert guard.decision_rule.margin == 0.1
    assert guard.canary_run.concurrency == 4 and guard.canary_run.hidden_fraction == 0.5


def test_an_impossible_safety_bound_is_a_config_error(tmp_path: Path) -> None:
    """max_safety_failure_rate that the safety cases cannot show is refused at start."""
    text = VALID + '\n[decision]\nrule = "sequential"\nmax_safety_failure_rate = 0.001\n'
    with pytest.raises(gr.ConfigError, match=r"\[decision\]"):
        gr.Guard.from_config(write(tmp_path, text))


def test_the_sandbox_section_selects_the_process_sandbox(tmp_path: Path) -> None:
    """[sandbox] mode = "process" with limits reaches the guard."""
    text = VALID + '\n[sandbox]\nmode = "process"\nwall_time = 3\nmemory = 500000000\n'
    guard = gr.Guard.from_config(write(tmp_path, text))
    assert guard.sandbox == "process" and guard.process_sandbox is not None
    assert guard.process_sandbox.limits.wall_time == 3
    assert guard.process_sandbox.limits.memory == 500_000_000
