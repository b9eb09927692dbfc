"""The REPL leak hunter names what leaks, and stays quiet about what does not."""

from __future__ import annotations

from diagnostics import hunt_leaks


def test_hunt_leaks_names_the_leaking_type_site_and_holder(tmp_path):
    report = hunt_leaks("tasks_example.work.leaky", {"kilobytes": 64}, runs=6, traced_runs=3,
                        chain_file=str(tmp_path / "chain.dot"))
    assert report.failures == 0
    assert report.leaking_type == "builtins.list" and report.types[0].per_run == 1.0
    site = report.leaking_site
    assert site.file.endswith("tasks_example/work.py") and "_cache.append(" in site.source
    assert 50_000 < site.per_run_bytes < 200_000  # 64 KiB of dicts per run, with their overhead
    assert report.chain[0] == "module tasks_example.work" and report.chain[2].startswith("['_cache'] list")
    assert (tmp_path / "chain.dot").read_text().startswith("digraph")
    assert "dict (no owner)" in report.heap_diff and report.heap_diff_bytes > 8 * 64 * 1024
    assert len(report.rss) == 6
    text = str(report)
    assert "builtins.list" in text and "tasks_example/work.py:" in text and "['_cache']" in text


def test_hunt_leaks_of_a_clean_task_finds_nothing_growing(tmp_path):
    report = hunt_leaks("tasks_example.work.noop", runs=6, traced_runs=3, chain_file=str(tmp_path / "c.dot"))
    assert report.types == [] and report.chain == []
    assert not any("tasks_example" in s.file for s in report.sites)
    assert sum(s.bytes for s in report.sites) < 16 * 1024


def test_hunt_leaks_of_a_task_that_cannot_run_says_why():
    import pytest

    from diagnostics import LeakHuntError
    with pytest.raises(LeakHuntError, match="nosuch.mod did not succeed in its first run.*bad-task"):
        hunt_leaks("nosuch.mod")
    with pytest.raises(LeakHuntError, match="ValueError"):
        hunt_leaks("tasks_example.work.fail")
