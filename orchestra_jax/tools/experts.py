"""LLMs used as tools: one completion interface, priced experts, and a task's pool of aliases.

The policy never names a model; it names an *alias* ("expert-1", "math-small") and the task's
configuration decides which model answers behind it and at what price. That indirection is what
the method's augmentation varies (random alias -> model mappings, random price schedules), so an
`Expert` binds an alias to a model, a client that can reach it, and the price charged for it.

Every client speaks one interface, `ChatClient.complete`, whether it is a real OpenAI-compatible
endpoint (`openai_client.OpenAIChatClient`) or a simulated expert
(`simulated_expert.SimulatedExpert`). Money is computed here from the completion's *real* token
usage, never estimated from text lengths, so cost in the reward is what a bill would say.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The shared chat vocabulary lives in the leaf `chat`; re-exported here, where callers (the
# verifiers, the QA tools) have always imported it from.
from orchestra_jax.tools.chat import (
    ChatClient,
    ChatCompletion,
    check_generation_args,
    check_messages,
)
from orchestra_jax.tools.http_errors import MissingApiKeyError
from orchestra_jax.tools.openai_client import OpenAIChatClient
from orchestra_jax.tools.pricing import Price, PricingCatalog
from orchestra_jax.tools.simulated_expert import ExpertProfile, SimulatedExpert

__all__ = [
    "ChatClient",
    "ChatCompletion",
    "Expert",
    "ExpertPool",
    "check_generation_args",
    "check_messages",
]


@dataclass(frozen=True)
class Expert:
    """An alias bound to a model, the client that reaches it, and the price charged for it."""

    alias: str
    model: str
    client: ChatClient
    price: Price

    async def complete(self, messages: list[dict], **kwargs: Any) -> tuple[ChatCompletion, float]:
        """Ask the expert; returns the completion and its cost in USD from the real usage.

        Keyword arguments (`max_tokens`, `temperature`, `hints`) go to the client unchanged;
        the client's `ToolError`s propagate so the executor can classify and retry them.
        """
        completion = await self.client.complete(messages, **kwargs)
        return completion, self.price.cost_usd(completion.tokens_in, completion.tokens_out)


#: Keys an alias's configuration may carry (anything else is a typo worth an error).
_SPEC_KEYS = frozenset(
    {"endpoint", "model", "api_key_env", "timeout_s", "profile", "seed", "sleep", "price"}
)


class ExpertPool:
    """The experts one task may call, by alias."""

    def __init__(self, experts: Mapping[str, Expert] | Sequence[Expert]):
        items = experts.values() if isinstance(experts, Mapping) else experts
        self._experts: dict[str, Expert] = {}
        for expert in items:
            if expert.alias in self._experts:
                raise ValueError(f"expert alias {expert.alias!r} is given twice")
            self._experts[expert.alias] = expert

    @classmethod
    def from_config(
        cls,
        mapping: Mapping[str, Mapping[str, Any]],
        catalog: PricingCatalog,
        clients: Mapping[str, ChatClient] | None = None,
    ) -> ExpertPool:
        """Build a pool from `alias -> spec`.

        A spec has `model` (priced through `catalog`) and `endpoint`: an OpenAI-compatible base
        URL (`http://127.0.0.1:8000/v1`, optional `api_key_env`, `timeout_s`) or `"simulated"`
        (`profile`: an `ExpertProfile`, its dict form or a preset's name; optional `seed`,
        `sleep`). `price` (`{"input_usd_per_mtok", "output_usd_per_mtok"}`) overrides the
        catalog for this alias. `clients` supplies ready-made clients by alias (shared
        sessions, test doubles); such an alias needs no `endpoint`. Errors name the alias.
        """
        clients = clients or {}
        experts = []
        for alias, spec in mapping.items():
            where = f"expert alias {alias!r}"
            if not isinstance(spec, Mapping):
                raise ValueError(f"{where}: expected a mapping, got {type(spec).__name__}")
            unknown = sorted(set(spec) - _SPEC_KEYS)
            if unknown:
                raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
            model = spec.get("model")
            if not isinstance(model, str) or not model:
                raise ValueError(f"{where}: 'model' must be a non-empty string, got {model!r}")
            price = cls._price_for(where, model, spec, catalog)
            try:
                client = clients[alias] if alias in clients else cls._client_for(model, spec)
            except (TypeError, ValueError, KeyError) as exc:
                # The alias in front; a missing key stays a MissingApiKeyError.
                if isinstance(exc, MissingApiKeyError):
                    raise MissingApiKeyError(f"{where}: {exc}") from None
                raise ValueError(f"{where}: {exc}") from None
            experts.append(Expert(alias=alias, model=model, client=client, price=price))
        return cls(experts)

    @staticmethod
    def _client_for(model: str, spec: Mapping[str, Any]) -> ChatClient:
        """A client for a spec's `endpoint`: a simulated expert or an OpenAI-compatible URL."""
        endpoint = spec.get("endpoint")
        if endpoint == "simulated":
            if spec.get("profile") is None:
                raise ValueError("a simulated expert needs a 'profile'")
            return SimulatedExpert(
                ExpertProfile.coerce(spec["profile"]),
                model=model,
                seed=int(spec.get("seed", 0)),
                sleep=bool(spec.get("sleep", False)),
            )
        if isinstance(endpoint, str) and endpoint.startswith(("http://", "https://")):
            return OpenAIChatClient(
                endpoint,
                model,
                api_key_env=spec.get("api_key_env"),
                timeout_s=float(spec.get("timeout_s", 60.0)),
            )
        raise ValueError(f"'endpoint' must be an http(s) URL or 'simulated', got {endpoint!r}")

    @staticmethod
    def _price_for(
        where: str, model: str, spec: Mapping[str, Any], catalog: PricingCatalog
    ) -> Price:
        override = spec.get("price")
        if override is None:
            try:
                return catalog.price(model)
            except KeyError as exc:
                raise ValueError(f"{where}: {exc.args[0]}") from None
        if isinstance(override, Price):
            return override
        if not isinstance(override, Mapping):
            raise ValueError(f"{where}: 'price' must be a mapping, got {override!r}")
        try:
            return Price(
                input_usd_per_mtok=override["input_usd_per_mtok"],
                output_usd_per_mtok=override["output_usd_per_mtok"],
                provider=str(override.get("provider", "")),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{where}: bad 'price' {dict(override)!r}: {exc}") from None

    def for_task(
        self, mapping: Mapping[str, str] | None, prices: Mapping[str, Price] | None = None
    ) -> ExpertPool:
        """The pool one task sees: its aliases, each bound to a named expert of this pool.

        A released task maps the aliases the policy sees (`search-1`, `expert-2`) to expert
        *names* (this pool's keys, the experts file's names), per task; `mapping` None keeps
        the names themselves as aliases. Each alias shares the named expert's client and model
        (no new connection per task) and is priced `prices[model]`, else `prices[name]`, else
        the named expert's own price: a task's price schedule beats the experts file. An alias
        naming an expert this pool lacks is a `KeyError` naming the alias, the name and the
        known names. The view shares clients: close the base pool, not the view.
        """
        prices = prices or {}
        pairs = mapping.items() if mapping is not None else ((n, n) for n in self._experts)
        experts = []
        for alias, name in pairs:
            base = self._experts.get(name) if isinstance(name, str) else None
            if base is None:
                raise KeyError(
                    f"alias {alias!r} maps to expert {name!r}, which the pool lacks; "
                    f"known experts: {', '.join(self.aliases())}"
                )
            price = prices.get(base.model, prices.get(name, base.price))
            if not isinstance(price, Price):
                raise TypeError(
                    f"alias {alias!r}: the price of {base.model!r} must be a Price, "
                    f"got {type(price).__name__}"
                )
            experts.append(Expert(alias=alias, model=base.model, client=base.client, price=price))
        return ExpertPool(experts)

    def __getitem__(self, alias: str) -> Expert:
        try:
            return self._experts[alias]
        except KeyError:
            raise KeyError(
                f"no expert with alias {alias!r}; known aliases: {', '.join(self.aliases())}"
            ) from None

    def __contains__(self, alias: object) -> bool:
        return alias in self._experts

    def __iter__(self) -> Iterator[str]:
        return iter(self._experts)

    def __len__(self) -> int:
        return len(self._experts)

    def aliases(self) -> list[str]:
        """The aliases in configuration order (the order tool descriptions list them)."""
        return list(self._experts)

    async def aclose(self) -> None:
        """Close every client that holds resources (HTTP sessions); safe to call twice."""
        closed: set[int] = set()
        for expert in self._experts.values():
            close = getattr(expert.client, "aclose", None)
            if close is not None and id(expert.client) not in closed:
                closed.add(id(expert.client))
                await close()

    def __repr__(self) -> str:
        inner = ", ".join(f"{a}={e.model}" for a, e in self._experts.items())
        return f"ExpertPool({inner})"
