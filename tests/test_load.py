"""16 clients for 60 s mixing sync REST, tasks and the Gradio API (issue 11): no 5xx other than the
documented 503 (busy) and 504 (time limit), no transport error, and RSS flat within 200 MiB."""

from bench.load import load, undocumented_5xx


def test_sixteen_mixed_clients_for_a_minute(cache_dir):
    figures = load(clients=16, seconds=60, size=128, cache_dir=str(cache_dir))
    counts = figures["counts"]
    assert undocumented_5xx(counts) == 0, counts
    assert not [key for key in counts if str(key[1]).startswith(("transport", "unfinished", "error"))], counts
    served = {kind for (kind, status), n in counts.items() if status in (200, "COMPLETED")}
    assert served == {"sync", "task", "gradio"}, counts
    assert figures["rss_peak"] - figures["rss_start"] < 200, figures
