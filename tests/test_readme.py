"""The README's quickstart runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_and_rejects_the_frozen_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The quickstart serves '4' and rejects the change to the frozen system prompt."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "4\n" in out
    assert "rejected" in out and "frozen" in out
