"""The ingest's Faust app keeps its working folder under the run folder, wherever it is started from."""

from __future__ import annotations

from pathlib import Path

from prefstream.config import Settings
from streams.faust_app import INGEST_GROUP, faust_app, replay_group


def test_the_faust_app_works_under_the_run_dir_not_the_current_directory(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    s = Settings(run_dir=tmp_path / "run")
    for app_id in (INGEST_GROUP, replay_group()):
        app = faust_app(s, app_id)
        assert Path(app.conf.datadir) == tmp_path / "run" / "faust" / app_id
        assert Path(app.conf.datadir).parent.is_dir()
    assert list(cwd.iterdir()) == []
