from cowest.eval.report import markdown_table, write_report


def _summary():
    return {
        "task": "demo",
        "split": "dev",
        "n": 4,
        "metric_names": ["accuracy", "macro_f1"],
        "primary_metric": "accuracy",
        "systems": {
            "weak": {"n": 4, "metrics": {"accuracy": 50.0, "macro_f1": 40.0}, "strong_calls_needed": 0, "strong_calls_paid": 0,
                     "strong_tokens": 0,
                     "delta_vs_cowest": [-25.0, -50.0, 0.0], "detectable_vs_cowest": 61.94},
            "cowest": {"n": 4, "metrics": {"accuracy": 75.0, "macro_f1": 70.0}, "strong_calls_needed": 4,
                       "strong_calls_paid": 1, "strong_tokens": 321},
        },
        "notes": {"weak model": "example note"},
    }


def test_markdown_table_has_every_system_and_metric():
    md = markdown_table(_summary())
    assert "| weak | 4 | 50.00 | 40.00 | -25.0 [-50.0, +0.0] | ±61.9 | 0 | 0 | 0 |" in md
    assert "| cowest | 4 | 75.00 | 70.00 | — | — | 4 | 1 | 321 |" in md
    assert "80% power" in md
    assert "example note" in md
    assert "strong calls needed | strong calls paid" in md and "cache hits excluded" in md


def test_write_report_files(tmp_path):
    write_report(tmp_path, _summary())
    assert (tmp_path / "metrics.json").exists()
    assert (tmp_path / "report.md").read_text().startswith("# demo (dev, n=4)")
    png = (tmp_path / "systems.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
