"""``mnist-tfx versions --card V``: the model card of one version, read from the version
directory itself (no ML Metadata store needed), and the one-line errors for a version
without a card and for a version that is not there. The cards of a real run are checked
in tests/components/test_pusher_card.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.errors import EXIT_BAD_INPUT, EXIT_OK
from cli.main import main


@pytest.fixture
def base(tmp_path, monkeypatch) -> Path:
    """OUTPUT_ROOT=tmp_path/out with two versions and no metadata store: 100 with a
    card, 200 pushed before cards existed."""
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "out" / "serving" / "mnist"
    (base / "100" / "assets.extra").mkdir(parents=True)
    (base / "100" / "assets.extra" / "model_card.md").write_text(
        "# Model card: mnist version 100\n\noverall: 0.9922\n", encoding="utf-8"
    )
    (base / "200" / "assets.extra").mkdir(parents=True)
    (base / ".incoming-300-1@host").mkdir()  # a staged copy is not a version
    return base


def _versions(*flags: str) -> int:
    return main(["versions", "--dataset", "mnist", "--output-root", "out", *flags])


def test_prints_the_card_of_the_version(base, capsys):
    assert _versions("--card", "100") == EXIT_OK
    assert capsys.readouterr().out == "# Model card: mnist version 100\n\noverall: 0.9922\n"


def test_a_version_without_a_card_is_one_line_naming_version_and_file(base, capsys):
    assert _versions("--card", "200") == EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err
    expected = Path("out/serving/mnist/200/assets.extra/model_card.md")
    assert err.count("\n") == 1
    assert err.startswith(f"error: --card 200: version 200 has no model card; expected {expected} ")


def test_an_unknown_version_lists_the_versions_there(base, capsys):
    assert _versions("--card", "300") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert (
        err
        == "error: --card 300: no version 300 under out/serving/mnist; versions there: 200, 100\n"
    )


def test_an_empty_base_path_says_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _versions("--card", "1") == EXIT_BAD_INPUT
    assert capsys.readouterr().err.endswith("versions there: none\n")


def test_a_version_that_is_not_a_number_is_refused_by_the_parser(base, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _versions("--card", "latest")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: --card latest: expected an integer (see mnist-tfx versions --help)\n"
    )


def test_a_rollback_copy_says_which_version_it_copies(base, capsys):
    """Versions 300 and 400 as mnist-tfx rollback publishes them: a copy of 100's files,
    card included, and a line in .rollbacks.jsonl (400 copies the copy 300)."""
    import json
    import shutil

    shutil.copytree(base / "100", base / "300")
    shutil.copytree(base / "100", base / "400")
    records = [
        {"version": 300, "restores": 100, "replaced": 200, "at": "2026-11-27T10:00:00+00:00"},
        {"version": 400, "restores": 300, "replaced": 200, "at": "2026-11-27T11:00:00+00:00"},
    ]
    (base / ".rollbacks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    card = "# Model card: mnist version 100\n\noverall: 0.9922\n"
    assert _versions("--card", "300") == EXIT_OK
    assert capsys.readouterr().out == (
        "> Version 300 is a rollback copy of version 100, recorded in .rollbacks.jsonl: the "
        "model and the card below are version 100's, written when it was pushed.\n\n" + card
    )
    assert _versions("--card", "400") == EXIT_OK
    assert capsys.readouterr().out == (
        "> Version 400 is a rollback copy of version 300 (a copy of version 100), recorded in "
        ".rollbacks.jsonl: the model and the card below are version 100's, written when it "
        "was pushed.\n\n" + card
    )
    assert _versions("--card", "100") == EXIT_OK  # the original is untouched
    assert capsys.readouterr().out == card
