"""Reading run folders back (what the app's runs list and monitor rely on) stays cheap: no torch."""
import subprocess
import sys

from resources import demo_project
from sembridge_engine.config import apply_overrides, load_config, save_config
from sembridge_engine.training.rundir import RunFolder


def test_reading_run_folders_does_not_import_torch():
    code = ("import sys; from sembridge_engine.training.rundir import RunFolder, list_runs; "
            "list_runs('.'); RunFolder('.').config(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_config_is_typed_so_clients_ask_it_the_rules(tmp_path):
    baseline = apply_overrides(load_config(demo_project() / "demo.toml"),
                               ["distill.loss=none", "distill.ot1=false", "distill.ot2=false", "student.epochs=7"])
    save_config(baseline, tmp_path / "config.toml")
    config = RunFolder(tmp_path).config()
    assert config is not None and not config.uses_teacher and config.student.epochs == 7
    (tmp_path / "config.toml").write_text("[student]\nepochs = 'many'\n")
    assert RunFolder(tmp_path).config() is None
    assert RunFolder(tmp_path / "missing").config() is None
