"""What a tool call costs in US dollars: the price catalog of models, and the basic tools' fees.

The reward charges every trajectory for the money it spent, so prices are data, not code: a JSON
file (`data/pricing.json`, shipped with the package) maps model names to USD per million input
and output tokens. A run's config can point at its own file, and the training-time augmentation
("unseen pricing") derives new catalogs with `with_prices` instead of editing globals.

Look-ups are forgiving in the ways endpoints differ (case, a Hugging Face `org/` prefix, dated
snapshot aliases listed in the file) and strict otherwise: an unknown model is a `KeyError` that
names it and the closest known names, because a silently free model would teach the policy that
it costs nothing.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The code sandbox, per second of wall-clock (the paper's tool table).
SANDBOX_USD_PER_SECOND = 8.3e-6
#: One web search query (Tavily basic search, the paper's tool table).
WEB_SEARCH_USD_PER_QUERY = 0.01
#: One page whose full text a web search extracted.
WEB_EXTRACT_USD_PER_PAGE = 0.002

_TOKENS_PER_UNIT = 1_000_000
_PACKAGED_FILE = "pricing.json"


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) and output (completion) tokens of one model."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    provider: str = ""

    def __post_init__(self) -> None:
        for field_name in ("input_usd_per_mtok", "output_usd_per_mtok"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{field_name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{field_name} must be finite and >= 0, got {value!r}")

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        """Dollars for `tokens_in` prompt and `tokens_out` completion tokens at this price."""
        if tokens_in < 0 or tokens_out < 0:
            raise ValueError(f"token counts must be >= 0, got in={tokens_in} out={tokens_out}")
        return (
            tokens_in * self.input_usd_per_mtok + tokens_out * self.output_usd_per_mtok
        ) / _TOKENS_PER_UNIT


def _normalise(name: str) -> str:
    return name.strip().lower()


class PricingCatalog:
    """Model name -> `Price`, with the aliases and forgiving look-up described above."""

    def __init__(self, prices: Mapping[str, Price], aliases: Mapping[str, str] | None = None):
        """`prices` maps canonical names to prices; `aliases` maps extra names to canonical ones."""
        self._prices: dict[str, Price] = {}
        self._canonical: dict[str, str] = {}  # normalised name or alias -> canonical name
        for name, price in prices.items():
            if not isinstance(price, Price):
                raise TypeError(f"price of {name!r} must be a Price, got {type(price).__name__}")
            self._add_name(name, name)
            self._prices[name] = price
        for alias, name in (aliases or {}).items():
            if name not in self._prices:
                raise ValueError(f"alias {alias!r} points at {name!r}, which has no price")
            self._add_name(alias, name)

    def _add_name(self, name: str, canonical: str) -> None:
        key = _normalise(name)
        if not key:
            raise ValueError("a model name may not be empty")
        if key in self._canonical and self._canonical[key] != canonical:
            raise ValueError(
                f"model name {name!r} is given twice (for {self._canonical[key]!r} and "
                f"{canonical!r})"
            )
        self._canonical[key] = canonical

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, path: str | Path | None = None) -> PricingCatalog:
        """Read a catalog file; None reads the one shipped with the package.

        Raises FileNotFoundError for a missing file and ValueError, naming the file and the
        entry, for a file that is not a valid catalog.
        """
        if path is None:
            resource = importlib.resources.files("orchestra_jax.tools") / "data" / _PACKAGED_FILE
            origin, text = f"packaged {_PACKAGED_FILE}", resource.read_text(encoding="utf-8")
        else:
            origin = str(path)
            text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"pricing catalog {origin}: not valid JSON ({exc})") from None
        return cls.from_dict(data, origin=origin)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "<dict>") -> PricingCatalog:
        """Build a catalog from the file's structure: `{"models": [{"name", "provider", ...}]}`.

        Each entry needs `name`, `input_usd_per_mtok` and `output_usd_per_mtok`; `provider`,
        `aliases` and free-text fields (`source`, `notes`) are optional.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("models"), list):
            raise ValueError(f"pricing catalog {origin}: expected an object with a 'models' list")
        prices: dict[str, Price] = {}
        aliases: dict[str, str] = {}
        for index, entry in enumerate(data["models"]):
            where = f"pricing catalog {origin}, entry {index}"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected an object, got {entry!r}")
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where}: 'name' must be a non-empty string, got {name!r}")
            where = f"{where} ({name!r})"
            missing = [k for k in ("input_usd_per_mtok", "output_usd_per_mtok") if k not in entry]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}")
            try:
                price = Price(
                    input_usd_per_mtok=entry["input_usd_per_mtok"],
                    output_usd_per_mtok=entry["output_usd_per_mtok"],
                    provider=str(entry.get("provider", "")),
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if name in prices:
                raise ValueError(f"{where}: the name is given twice")
            prices[name] = price
            entry_aliases = entry.get("aliases", [])
            if not isinstance(entry_aliases, list) or not all(
                isinstance(a, str) for a in entry_aliases
            ):
                raise ValueError(f"{where}: 'aliases' must be a list of strings")
            for alias in entry_aliases:
                aliases[alias] = name
        try:
            return cls(prices, aliases)
        except ValueError as exc:
            raise ValueError(f"pricing catalog {origin}: {exc}") from None

    def with_prices(self, overrides: Mapping[str, Price]) -> PricingCatalog:
        """A new catalog with some models re-priced or added (this one is left as it is).

        Training-time augmentation draws random price schedules per task; a fresh catalog per
        task keeps every episode's prices explicit and the shared catalog untouched.
        """
        prices = dict(self._prices)
        aliases = {k: v for k, v in self._canonical.items() if k != _normalise(v)}
        for name, price in overrides.items():
            canonical = self._resolve(name) or name
            prices[canonical] = price
        return PricingCatalog(prices, aliases)

    # ------------------------------------------------------------------ look-up

    def _resolve(self, model: str) -> str | None:
        key = _normalise(model)
        if key in self._canonical:
            return self._canonical[key]
        if "/" in key:  # a Hugging Face repo id, "Qwen/Qwen3-32B"
            return self._canonical.get(key.rsplit("/", 1)[1])
        return None

    def price(self, model: str) -> Price:
        """The price of `model`; KeyError naming it and the closest known names if unknown."""
        canonical = self._resolve(model) if isinstance(model, str) else None
        if canonical is None:
            close = difflib.get_close_matches(
                _normalise(str(model)).rsplit("/", 1)[-1], list(self._canonical), n=3, cutoff=0.5
            )
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise KeyError(f"no price for model {model!r} in the pricing catalog{hint}")
        return self._prices[canonical]

    def cost_usd(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Dollars for one call of `model` with the given token counts."""
        return self.price(model).cost_usd(tokens_in, tokens_out)

    def models(self) -> list[str]:
        """The canonical model names, sorted."""
        return sorted(self._prices)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._resolve(model) is not None

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PricingCatalog({len(self._prices)} models)"
