"""Memory stays bounded under many distinct prompts (issue 11): 200 new prompts through REST and the
Gradio API grow the server's RSS by less than the prompt cache's cap plus 150 MiB. Before the fix,
each new prompt kept the text encoder's activations alive: about 47 MiB a prompt."""

from bench.soak import BUDGET_MIB, soak


def test_200_distinct_prompts_stay_within_the_cache_cap_plus_150_mib(cache_dir):
    cache_mb = 16
    figures = soak(prompts=200, cache_mb=cache_mb, size=64, cache_dir=str(cache_dir))
    growth = figures["after Gradio API"] - figures["before"]
    assert growth < cache_mb + BUDGET_MIB, figures
