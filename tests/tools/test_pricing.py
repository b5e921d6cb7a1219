"""The pricing catalog: the paper's prices, exact cost arithmetic, forgiving look-up."""

from __future__ import annotations

import json

import pytest

from orchestra_jax.tools import pricing
from orchestra_jax.tools.pricing import Price, PricingCatalog

# The paper's tool table (USD per million input / output tokens).
PAPER_PRICES = {
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "qwen3-32b": (0.8, 0.8),
    "llama-3.3-70b-instruct": (0.9, 0.9),
    "qwen2.5-coder-32b-instruct": (0.8, 0.8),
    "qwen2.5-math-72b-instruct": (0.9, 0.9),
    "qwen2.5-math-7b-instruct": (0.2, 0.2),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "qwen3-8b": (0.2, 0.2),
}


@pytest.fixture(scope="module")
def catalog() -> PricingCatalog:
    return PricingCatalog.load()


def test_packaged_catalog_carries_the_papers_prices(catalog):
    for model, (price_in, price_out) in PAPER_PRICES.items():
        price = catalog.price(model)
        assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == (price_in, price_out), model


def test_local_models_are_free(catalog):
    assert catalog.cost_usd("smollm2-135m", 10_000, 10_000) == 0.0
    assert catalog.price("smollm2").provider == "local"


def test_basic_tool_fees_match_the_paper():
    assert pricing.SANDBOX_USD_PER_SECOND == 8.3e-6
    assert pricing.WEB_SEARCH_USD_PER_QUERY == 0.01
    assert pricing.WEB_EXTRACT_USD_PER_PAGE == 0.002


def test_cost_is_tokens_times_price_per_million(catalog):
    # GPT-5: 1.25 in, 10 out per million tokens.
    assert catalog.cost_usd("gpt-5", 1_000_000, 0) == 1.25
    assert catalog.cost_usd("gpt-5", 0, 1_000_000) == 10.0
    assert catalog.cost_usd("gpt-5", 1234, 567) == pytest.approx(0.0072125, rel=1e-12)
    assert catalog.cost_usd("claude-opus-4-1", 2000, 1000) == pytest.approx(0.105, rel=1e-12)
    assert catalog.cost_usd("gpt-5", 0, 0) == 0.0


def test_negative_token_counts_are_rejected(catalog):
    with pytest.raises(ValueError, match="token counts"):
        catalog.cost_usd("gpt-5", -1, 10)


def test_lookup_ignores_case_org_prefix_and_knows_aliases(catalog):
    gpt5 = catalog.price("gpt-5")
    assert catalog.price("GPT-5") == gpt5
    assert catalog.price("Qwen/Qwen3-32B") == catalog.price("qwen3-32b")
    assert catalog.price("meta-llama/Llama-3.3-70B-Instruct").input_usd_per_mtok == 0.9
    assert catalog.price("claude-opus-4-1-20250805") == catalog.price("claude-opus-4.1")
    assert "Qwen/Qwen2.5-Math-7B-Instruct" in catalog
    assert "no-such-model" not in catalog


def test_unknown_model_error_names_it_and_close_matches(catalog):
    with pytest.raises(KeyError) as info:
        catalog.price("gpt5-mini")
    message = info.value.args[0]
    assert "'gpt5-mini'" in message
    assert "gpt-5-mini" in message


def test_models_lists_canonical_names_sorted(catalog):
    models = catalog.models()
    assert models == sorted(models)
    assert set(PAPER_PRICES) <= set(models)
    assert "claude-opus-4.1" not in models  # an alias, not a canonical name


def test_with_prices_returns_a_new_catalog_and_keeps_aliases(catalog):
    cheap = Price(0.1, 0.2, "test")
    repriced = catalog.with_prices({"Claude-Opus-4.1": cheap, "brand-new": cheap})
    assert repriced.price("claude-opus-4-1") == cheap
    assert repriced.price("claude-opus-4-1-20250805") == cheap  # the alias follows
    assert repriced.price("brand-new") == cheap
    assert catalog.price("claude-opus-4-1").input_usd_per_mtok == 15.0  # original untouched
    assert "brand-new" not in catalog


def _write(tmp_path, data) -> str:
    path = tmp_path / "prices.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def test_loads_a_users_own_file(tmp_path):
    path = _write(
        tmp_path,
        {
            "models": [
                {
                    "name": "my-model",
                    "aliases": ["mine"],
                    "provider": "me",
                    "input_usd_per_mtok": 2,
                    "output_usd_per_mtok": 4,
                },
            ]
        },
    )
    catalog = PricingCatalog.load(path)
    assert catalog.models() == ["my-model"]
    assert catalog.price("MINE") == Price(2, 4, "me")
    assert catalog.cost_usd("my-model", 500_000, 250_000) == 2.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("{not json", "not valid JSON"),
        ({"entries": []}, "'models' list"),
        ({"models": [{"input_usd_per_mtok": 1, "output_usd_per_mtok": 1}]}, "entry 0: 'name'"),
        ({"models": [{"name": "a", "input_usd_per_mtok": 1}]}, "'a'.*missing output_usd_per_mtok"),
        (
            {"models": [{"name": "a", "input_usd_per_mtok": -1, "output_usd_per_mtok": 1}]},
            "'a'.*>= 0",
        ),
        (
            {"models": [{"name": "a", "input_usd_per_mtok": "1", "output_usd_per_mtok": 1}]},
            "'a'.*must be a number",
        ),
        (
            {
                "models": [
                    {"name": "a", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                    {
                        "name": "b",
                        "aliases": ["A"],
                        "input_usd_per_mtok": 1,
                        "output_usd_per_mtok": 1,
                    },
                ]
            },
            "given twice",
        ),
    ],
)
def test_bad_catalog_files_name_the_file_and_entry(tmp_path, data, expected):
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=expected) as info:
        PricingCatalog.load(path)
    assert path in str(info.value)


def test_missing_catalog_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        PricingCatalog.load(tmp_path / "absent.json")
