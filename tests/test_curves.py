"""Training curves to PNG (searchr2.curves) from dvclive's metric files."""
import pytest

from searchr2.curves import main, plot_curves, read_curves


def _live(tmp_path):
    root = tmp_path / "run/plots/metrics"
    root.mkdir(parents=True)
    (root / "reward.tsv").write_text("timestamp\tstep\treward\n1\t1\t0.2\n2\t2\t0.5\n3\t3\t0.4\n")
    (root / "val_em.tsv").write_text("timestamp\tstep\tval_em\n1\t0\t30.0\n2\t2\t35.0\n")
    return tmp_path / "run"


def test_reads_dvclive_files_and_writes_a_png(tmp_path):
    curves = read_curves(_live(tmp_path))
    assert curves == {"reward": ([1.0, 2.0, 3.0], [0.2, 0.5, 0.4]), "val_em": ([0.0, 2.0], [30.0, 35.0])}
    out = plot_curves(curves, tmp_path / "fig/c.png", "t", ["val_em", "reward"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    main([str(tmp_path / "run"), str(tmp_path / "all.png")])
    assert (tmp_path / "all.png").stat().st_size > 1000


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dvclive curves"):
        read_curves(tmp_path)
    run = _live(tmp_path)
    with pytest.raises(KeyError, match="no curve named loss; have: reward, val_em"):
        plot_curves(read_curves(run), tmp_path / "x.png", metrics=["loss"])
    (run / "plots/metrics/bad.tsv").write_text("step\tbad\n1\tnot-a-number\n")
    with pytest.raises(ValueError, match="bad.tsv: not a dvclive metric file"):
        read_curves(run)
