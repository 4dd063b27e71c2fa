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


def test_teacher_diversity_per_round_and_class(tmp_path):
    folder = RunFolder(tmp_path)
    (tmp_path / "matches").mkdir()
    rows = ["rgb_path,ms_path,class,score", "a1,m1,A,0.9", "a2,m1,A,0.8", "a3,m2,A,0.7", "b1,m3,B,0.5"]
    folder.match_table(0).write_text("\n".join(rows) + "\n")
    folder.match_table(1).write_text("\n".join([rows[0], "a1,m1,A,0.1", "a2,m2,A,0.2", "a3,m3,A,0.3", "b1,m4,B,0.1"]) + "\n")
    first, second = folder.teacher_diversity()
    assert (first["A"].images, first["A"].teachers) == (3, 2) and abs(first["A"].busiest_share - 2 / 3) < 1e-9
    assert second["A"].teachers == 3 and abs(second["A"].busiest_share - 1 / 3) < 1e-9
    assert first["B"].teachers == 1 and first["B"].busiest_share == 1.0
