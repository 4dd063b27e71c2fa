"""`sembridge inspect` on the bundled demo folders and on a broken archive, through the real CLI."""
import json

import pytest
import rasterio

from sembridge_engine import cli
from resources import demo_project

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture
def run_inspect(capsys):
    def run(*arguments):
        code = cli.main(["inspect", *map(str, arguments)])
        return code, capsys.readouterr()

    return run


def test_inspect_demo_ms_json(run_inspect):
    code, output = run_inspect(demo_project() / "ms", "--json")
    summary = json.loads(output.out)
    assert code == 0
    assert summary["modality"] == "ms"
    assert summary["classes"] == {name: 20 for name in
                                  ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Residential", "River"]}
    assert summary["n_files"] == 120
    assert summary["band_count"] == 13 and summary["band_names"][-1] == "B8A"
    assert summary["preset"] == "sentinel2_eurosat13"
    assert summary["dtypes"] == ["uint16"] and summary["sizes"] == ["64x64"]
    assert all(crs.startswith("EPSG:326") for crs in summary["crs"]) and len(summary["crs"]) >= 2
    assert summary["nodata"] == [] and summary["problems"] == []
    assert len(summary["band_stats"]["mean"]) == 13 and summary["band_stats"]["mean"][9] < 100


def test_inspect_demo_rgb_json(run_inspect):
    code, output = run_inspect(demo_project() / "rgb", "--json")
    summary = json.loads(output.out)
    assert code == 0
    assert summary["modality"] == "rgb"
    assert set(summary["classes"].values()) == {30} and len(summary["classes"]) == 6
    assert summary["band_count"] == 3 and summary["dtypes"] == ["uint8"]
    assert summary["problems"] == [] and summary["crs"] == []
    assert "256x256" in summary["sizes"]


def test_inspect_reports_problems_and_still_exits_zero(run_inspect, data_ms_archive, data_demo_tile):
    forest = data_ms_archive / "Forest"
    (forest / "notes.txt").write_text("notes")
    truncated = forest / "truncated.tif"
    truncated.write_bytes(data_demo_tile.read_bytes()[:40000])
    with rasterio.open(data_demo_tile) as source:
        profile, data = source.profile, source.read()
    four_bands = forest / "four_bands.tif"
    with rasterio.open(four_bands, "w", **{**profile, "count": 4}) as target:
        target.write(data[:4])
    code, output = run_inspect(data_ms_archive, "--json")
    summary = json.loads(output.out)
    assert code == 0 and summary["band_count"] == 13
    problems = {problem["path"]: problem["message"] for problem in summary["problems"]}
    assert set(problems) == {str(forest / "notes.txt"), str(truncated), str(four_bands)}
    assert "corrupt or truncated" in problems[str(truncated)]
    assert "has 4 bands" in problems[str(four_bands)]

    code, output = run_inspect(data_ms_archive)
    assert code == 0 and "Problems (3):" in output.out and str(truncated) in output.out


def test_inspect_modality_override_and_missing_path(run_inspect, data_rgb_folder, tmp_path):
    code, output = run_inspect(data_rgb_folder, "--modality", "rgb")
    assert code == 0 and "RGB imagery" in output.out and "Bands: 3" in output.out
    code, output = run_inspect(tmp_path / "missing", "--json")
    assert code == 2 and "missing" in output.err
