"""The paper's qa setting as an environment suite (`data.source = "qa"`), built from the config.

Everything the setting needs is configuration, not Python wiring:

* tasks from `data.path` (training) and `data.eval_path` (held out), in either format the
  loader reads (`orchestra_jax.envs.qa_tasks`): plain FRAMES / HLE rows, or the released
  training records with their per-task alias mapping, prices, tool subsets and preference
  vector. A bad row stops the start naming file:line, or is reported and skipped
  (`data.bad_rows`); so is a task whose mapping names an expert the experts file lacks.
* the experts from `experts.file` (name -> an OpenAI-compatible endpoint and its price; API
  keys only through `api_key_env`), re-priced by `experts.prices_file` when given (an unseen
  price schedule at evaluation); the policy's own tokens priced as `experts.orchestrator_model`.
* retrieval over `search.corpus` (local BM25), with the Tavily-compatible web search as a
  fall-back when the corpus finds nothing (`search.web_fallback`).
* the outcome: normalised exact match (numbers within a tolerance, maths equivalence) first,
  then the LLM judge `judge.expert` on a miss; verdicts are cached per (question, answer), and
  a judge that fails (unreachable, garbage, time-out) gives outcome 0 with its error kind on
  the trajectory (`info["judge_error"]`), counted by the step's metrics -- never a crash.

With `qa.augment`, plain training tasks get the paper's augmentation first (per-task
anonymised aliases, price schedule, tool subset and preference; `orchestra_jax.envs.qa_augment`);
released records keep their own.

The reward's tool-count features are the aliases the tasks show the policy, in order of first
appearance (training tasks, then held-out ones), and a task's preference vector comes from its
`pref_vec` (aliases, accuracy, cost, latency); tasks without one use `reward.preference`.

The evaluation plays the trained and warm-start policies, the random valid policy, two fixed
routes per expert (`route:answer:E`: ask E for the answer at once; `route:search-answer:E`:
E searches, then answers) and, with `qa.basic_tools`, the trained policy with every alias
mapped to one expert (`basic_tools:E`, the paper's "basic tools" baseline).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from orchestra_jax.envs.qa import QAEnvironment
from orchestra_jax.envs.qa_augment import augment_tasks
from orchestra_jax.envs.qa_tasks import QATask, TaskFileError, load_task_file
from orchestra_jax.eval.runner import EvalSpec
from orchestra_jax.rewards.verifiers import LLMJudge, Verdict, verify_answer
from orchestra_jax.rollout.scripted import FixedRoute, random_valid_call
from orchestra_jax.tools.answers import normalize_answer
from orchestra_jax.tools.executor import ToolExecutor
from orchestra_jax.tools.experts import ExpertPool, MissingApiKeyError
from orchestra_jax.tools.local_search import LocalSearch
from orchestra_jax.tools.pricing import Price, PricingCatalog
from orchestra_jax.tools.qa_tools import ANSWER, SEARCH, QATools
from orchestra_jax.tools.search_types import SearchHit
from orchestra_jax.train.errors import ConfigError

#: Seconds an executor waits for one tool call beyond the slowest expert's own time limit.
_EXECUTOR_MARGIN_S = 5.0
#: How many skipped rows the start-up log names one by one.
_NAMED_SKIPS = 10

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# Experts and prices


def _read_json_object(path_text: str, key: str) -> dict[str, Any]:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"config key '{key}': no such file {str(path)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config key '{key}': {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"config key '{key}': {path} must hold a non-empty JSON object")
    return data


def read_prices(path_text: str | None, key: str = "experts.prices_file") -> dict[str, Price]:
    """Model name -> `Price` from a `{model: {input_usd_per_mtok, output_usd_per_mtok}}`
    file (None: no overrides). Errors name the key, the file and the model."""
    if path_text is None:
        return {}
    prices = {}
    for model, spec in _read_json_object(path_text, key).items():
        try:
            prices[model] = Price(input_usd_per_mtok=spec["input_usd_per_mtok"],
                                  output_usd_per_mtok=spec["output_usd_per_mtok"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"config key '{key}': model {model!r} has a bad price {spec!r} "
                              f"({type(exc).__name__}: {exc}); expected "
                              "{input_usd_per_mtok, output_usd_per_mtok}") from None
    return prices


def build_expert_pool(config: ml_collections.ConfigDict,
                      prices: Mapping[str, Price]) -> tuple[ExpertPool, PricingCatalog]:
    """The experts of `experts.file`, each priced by `prices` (the prices file), its own
    `price`, or the packaged catalog, in that order; ConfigError naming the key otherwise."""
    if config.experts.file is None:
        raise ConfigError("config key 'experts.file' is None; the qa setting needs a JSON file "
                          "of expert endpoints (name -> {model, endpoint, price, ...})")
    specs = _read_json_object(config.experts.file, "experts.file")
    catalog = PricingCatalog.load().with_prices(dict(prices))
    chosen = {}
    for name, spec in specs.items():
        if isinstance(spec, dict) and spec.get("model") in prices:
            spec = {**spec, "price": dataclasses.asdict(prices[spec["model"]])}
        chosen[name] = spec
    try:
        pool = ExpertPool.from_config(chosen, catalog)
    except MissingApiKeyError as exc:
        raise ConfigError(f"config key 'experts.file' ({config.experts.file}): {exc}") from None
    except (TypeError, ValueError) as exc:
        hint = (" (give the entry a 'price' {input_usd_per_mtok, output_usd_per_mtok}, or "
                "price its model in experts.prices_file)" if "no price" in str(exc) else "")
        raise ConfigError(f"config key 'experts.file' ({config.experts.file}): {exc}{hint}"
                          ) from None
    return pool, catalog


def orchestrator_price(config: ml_collections.ConfigDict,
                       catalog: PricingCatalog) -> Price | None:
    """The policy's own price per token (`experts.orchestrator_model`; None: free)."""
    model = config.experts.orchestrator_model
    if model is None:
        return None
    try:
        return catalog.price(model)
    except KeyError as exc:
        raise ConfigError(f"config key 'experts.orchestrator_model': {exc.args[0]}") from None


# ------------------------------------------------------------------------------------------------
# Tasks


def _load(path: str | None, key: str, config: ml_collections.ConfigDict, pool: ExpertPool,
          log: Log) -> list[QATask]:
    if path is None:
        return []
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"config key '{key}': no such task file {path!r}")
    try:
        loaded = load_task_file(Path(path).expanduser(), on_bad_row=config.data.bad_rows,
                                experts=pool)  # a mapping naming no expert: file:line
    except TaskFileError as exc:
        raise ConfigError(f"config key '{key}': {exc} (data.bad_rows='skip' trains on the "
                          "other rows)") from None
    _report_skips(key, loaded.skipped, log)
    return list(loaded.tasks)


def _report_skips(key: str, skipped: Sequence[str], log: Log) -> None:
    if not skipped:
        return
    log(f"{key}: skipped {len(skipped)} row(s):")
    for why in skipped[:_NAMED_SKIPS]:
        log(f"  {why}")
    if len(skipped) > _NAMED_SKIPS:
        log(f"  ... and {len(skipped) - _NAMED_SKIPS} more")


def usable_tasks(tasks: Sequence[QATask], pool: ExpertPool, key: str, on_bad: str,
                 log: Log) -> list[QATask]:
    """The tasks whose aliases all reach an expert of `pool` with a price; a task that does
    not stops the start (`on_bad` 'fail') or is left out with a line saying why."""
    kept, skipped = [], []
    for task in tasks:
        try:
            view = pool.for_task(task.model_mapping, task.prices)
            wanted = task.aliases if task.model_mapping is None else None
            missing = [a for a in (wanted or ()) if a not in view]
            if missing:
                raise KeyError(f"aliases {missing} are not experts of experts.file "
                               f"({', '.join(pool.aliases())})")
        except (KeyError, ValueError) as exc:
            why = f"task {task.id!r}: {exc.args[0] if exc.args else exc}"
            if on_bad == "fail":
                raise ConfigError(f"config key '{key}': {why} (data.bad_rows='skip' leaves "
                                  "such tasks out)") from None
            skipped.append(why)
            continue
        kept.append(task)
    _report_skips(key, skipped, log)
    return kept


def with_prices(tasks: Sequence[QATask], prices: Mapping[str, Price]) -> list[QATask]:
    """The tasks with `prices` over their own (the prices file beats a record's schedule)."""
    if not prices:
        return list(tasks)
    return [dataclasses.replace(t, prices={**t.prices, **prices}) for t in tasks]


def visible_aliases(task: QATask, pool: ExpertPool) -> tuple[str, ...]:
    """The aliases `task` shows the policy."""
    if task.model_mapping is not None:
        return tuple(task.model_mapping)
    if task.aliases is not None:
        return tuple(task.aliases)
    return tuple(pool.aliases())


def alias_order(tasks: Sequence[QATask], pool: ExpertPool) -> tuple[str, ...]:
    """Every alias the tasks show, in order of first appearance: the reward's tool columns."""
    seen: dict[str, None] = {}
    for task in tasks:
        for alias in visible_aliases(task, pool):
            seen.setdefault(alias, None)
    return tuple(seen) or tuple(pool.aliases())


def preference_vector(task: QATask, aliases: Sequence[str],
                      default: Sequence[float]) -> list[float] | None:
    """The task's `pref_vec` over `[*aliases, outcome, cost, latency]` (the release's
    `accuracy` is the outcome weight; an alias it does not name weighs 0, a missing
    accuracy/cost/latency takes `default`'s). None when the task carries none."""
    pref = task.preference
    if not pref:
        return None
    out_w, cost_w, lat_w = default[-3:]
    return ([float(pref.get(a, 0.0)) for a in aliases]
            + [float(pref.get("accuracy", out_w)), float(pref.get("cost", cost_w)),
               float(pref.get("latency", lat_w))])


# ------------------------------------------------------------------------------------------------
# The outcome


class CachedGrader:
    """The paper's qa outcome for the environment: exact match first, the judge on a miss.

    Verdicts are cached per (question, normalised answer): group rollouts often agree, and a
    judged answer need not be judged again. A failed verdict (the judge's error) is not cached,
    so a later episode asks again. `errors` counts failures by kind."""

    def __init__(self, judge: LLMJudge | None) -> None:
        self.judge = judge
        self.cache: dict[tuple[str, str], Verdict] = {}
        self.errors: Counter[str] = Counter()

    async def __call__(self, task: QATask, predicted: str) -> Verdict:
        key = (task.question, normalize_answer(predicted or ""))
        if key in self.cache:
            return self.cache[key]
        verdict = await verify_answer(predicted, task.answer, question=task.question,
                                      judge=self.judge)
        if verdict.error_kind is None:
            self.cache[key] = verdict
        else:
            self.errors[verdict.error_kind] += 1
        return verdict


def build_judge(config: ml_collections.ConfigDict, pool: ExpertPool) -> LLMJudge | None:
    name = config.judge.expert
    if name is None:
        return None
    if name not in pool:
        raise ConfigError(f"config key 'judge.expert' is {name!r}; expected a name in "
                          f"experts.file, one of {pool.aliases()}")
    return LLMJudge(pool[name], max_tokens=int(config.judge.max_tokens),
                    timeout_s=float(config.judge.timeout_s))


# ------------------------------------------------------------------------------------------------
# Retrieval


class FallbackRetriever:
    """The local corpus first; the web search when the corpus finds nothing (the paper's
    order). The web's fee is charged only when it answered."""

    def __init__(self, local: Any, web: Any) -> None:
        self.local = local
        self.web = web
        self._web_answered: set[int] = set()

    async def search(self, query: str, k: int = 5, **kwargs: Any) -> list[SearchHit]:
        hits = await self.local.search(query, k, **kwargs)
        if hits or self.web is None:
            return hits
        hits = await self.web.search(query, k)
        self._web_answered.add(id(hits))
        return hits

    def cost_usd(self, hits: Sequence[SearchHit]) -> float:
        if id(hits) in self._web_answered:
            self._web_answered.discard(id(hits))
            return float(self.web.cost_usd(hits))
        return 0.0


def build_retriever(config: ml_collections.ConfigDict) -> Any:
    """`search.corpus` served by local BM25, the web search behind it when asked for."""
    s = config.search
    web = None
    if s.web_fallback:
        from orchestra_jax.tools.web_search import WebSearch

        try:
            web = WebSearch(str(s.web_endpoint), api_key_env=str(s.web_api_key_env))
        except (MissingApiKeyError, ValueError) as exc:
            raise ConfigError(f"config key 'search.web_fallback': {exc}") from None
    if s.corpus is None:
        if web is None:
            raise ConfigError("config key 'search.corpus' is None; the qa setting needs a JSONL "
                              "corpus ({id, title, text}) or search.web_fallback=True")
        return web
    corpus = Path(s.corpus).expanduser()
    if not corpus.is_file():
        raise ConfigError(f"config key 'search.corpus': no such corpus file {str(corpus)!r}")
    try:
        local = LocalSearch(corpus)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config key 'search.corpus': {exc}") from None
    return local if web is None else FallbackRetriever(local, web)


# ------------------------------------------------------------------------------------------------
# Evaluation


def _alias_of(task: QATask, pool: ExpertPool, expert: str) -> str:
    """The alias under which `task` shows `expert` (the expert's own name when unmapped)."""
    if task.model_mapping is not None:
        for alias, name in task.model_mapping.items():
            if name == expert:
                return alias
    return expert


def _route(pool: ExpertPool, expert: str, tools: Sequence[str]) -> Callable[[Any], Any]:
    def make(task: Any) -> FixedRoute:
        alias = _alias_of(task, pool, expert)
        return FixedRoute([(tool, {"model": alias}) for tool in tools])

    return make


def evaluation_spec(tasks: Sequence[QATask], pool: ExpertPool, aliases: tuple[str, ...],
                    basic_tools: bool, judge: str | None = None) -> EvalSpec:
    """The held-out evaluation: random, two fixed routes per expert, basic-tools variants
    (the judge is no expert of the policy's: it gets neither)."""
    scripted: dict[str, Callable[[Any], Any]] = {"random": lambda task: random_valid_call}
    variants: dict[str, list[QATask]] = {}
    for name in pool.aliases():
        if name == judge:
            continue
        scripted[f"route:answer:{name}"] = _route(pool, name, (ANSWER,))
        scripted[f"route:search-answer:{name}"] = _route(pool, name, (SEARCH, ANSWER))
        if basic_tools:
            variants[f"basic_tools:{name}"] = [
                dataclasses.replace(t, model_mapping={a: name for a in visible_aliases(t, pool)})
                for t in tasks]
    return EvalSpec(tasks=list(tasks), aliases=aliases, family_of=lambda task: task.family,
                    scripted=scripted, variants=variants)


# ------------------------------------------------------------------------------------------------
# The suite


@dataclasses.dataclass
class QAInputs:
    """What the config's files hold, read and checked: the experts, the prices, the tasks."""

    pool: ExpertPool
    catalog: PricingCatalog
    train: list[QATask]
    held_out: list[QATask]


def _without_judge(tasks: Sequence[QATask], pool: ExpertPool,
                   judge: str | None) -> list[QATask]:
    """Tasks that see the pool's own names stop seeing the judge among them: grading is not
    a tool the policy may call."""
    if judge is None:
        return list(tasks)
    experts = tuple(a for a in pool.aliases() if a != judge)
    return [dataclasses.replace(t, aliases=experts)
            if t.model_mapping is None and t.aliases is None else t for t in tasks]


def read_qa_inputs(config: ml_collections.ConfigDict, log: Log = print) -> QAInputs:
    """The experts file, the prices file and the task files, each checked; ConfigError naming
    the key (and for a task file, the file and line) for bad input. Needs no workdir, so the
    training loop runs it before it writes anything (`check_qa_config`)."""
    prices = read_prices(config.experts.prices_file)
    pool, catalog = build_expert_pool(config, prices)
    if config.data.path is None:
        raise ConfigError("config key 'data.path' is None; the qa setting trains on a task "
                          "file (JSONL: {id, question, answer} rows or the released records)")
    judge = config.judge.expert
    on_bad = str(config.data.bad_rows)
    train = _without_judge(_load(config.data.path, "data.path", config, pool, log), pool, judge)
    if config.qa.augment:  # before the prices file: it re-prices the drawn schedules too
        train = augment_tasks(train, {name: pool[name] for name in pool.aliases()
                                      if name != judge},
                              seed=int(config.train.seed),
                              preference_share=float(config.qa.preference_share))
    train = usable_tasks(with_prices(train, prices), pool, "data.path", on_bad, log)
    if config.data.max_tasks is not None:
        train = train[: int(config.data.max_tasks)]
    held_out = _without_judge(_load(config.data.eval_path, "data.eval_path", config, pool, log),
                              pool, judge)
    held_out = usable_tasks(with_prices(held_out, prices), pool, "data.eval_path", on_bad, log)
    if not train:
        raise ConfigError(f"config key 'data.path': no usable task in {config.data.path}")
    return QAInputs(pool, catalog, train, held_out)


def check_qa_config(config: ml_collections.ConfigDict) -> None:
    """Everything about a qa config that can be checked before the workdir is written: the
    files, the judge's name, the corpus's existence and the orchestrator's price."""
    inputs = read_qa_inputs(config, log=lambda _: None)
    build_judge(config, inputs.pool)
    orchestrator_price(config, inputs.catalog)
    corpus = config.search.corpus
    if corpus is not None and not Path(corpus).expanduser().is_file():
        raise ConfigError(f"config key 'search.corpus': no such corpus file {corpus!r}")
    if corpus is None and not config.search.web_fallback:
        build_retriever(config)  # its error names the key


def build_qa_suite(config: ml_collections.ConfigDict, workdir: Path,
                   log: Log = print) -> dict[str, Any]:
    """The fields of the qa `EnvSuite` (`orchestra_jax.train.envs`, which registers this as
    `qa` and so is not imported here); ConfigError naming the key for bad input."""
    inputs = read_qa_inputs(config, log)
    pool, catalog, train, held_out = inputs.pool, inputs.catalog, inputs.train, inputs.held_out
    retriever = build_retriever(config)
    grader = CachedGrader(build_judge(config, pool))
    aliases = alias_order([*train, *held_out], pool)
    default = [float(config.reward.preference.outcome), float(config.reward.preference.cost),
               float(config.reward.preference.latency)]
    qa = config.qa
    code_timeout_s = float(qa.code_timeout_s)

    def make_env() -> QAEnvironment:
        tools = QATools(pool, retriever, search_k=int(config.search.k),
                        code_timeout_s=code_timeout_s,
                        expert_max_tokens=int(config.experts.max_tokens))
        return QAEnvironment(tools, context_budget=int(qa.context_chars),
                             episode_timeout_s=float(config.rollout.episode_timeout_s),
                             grader=grader)

    slowest = max([code_timeout_s, *(float(getattr(pool[a].client, "timeout_s", 60.0))
                                     for a in pool.aliases())])

    def make_executor() -> ToolExecutor:
        return ToolExecutor(timeout_s=slowest + _EXECUTOR_MARGIN_S, closers=(pool.aclose,))

    def count_calls(trajectory: Any) -> dict[str, int]:
        counts: Counter[str] = Counter(r.alias for r in trajectory.records if r.alias in aliases)
        return dict(counts)

    evaluation = (evaluation_spec(held_out, pool, aliases, bool(qa.basic_tools),
                                  judge=config.judge.expert) if held_out else None)
    return dict(
        tasks=train, eval_tasks=held_out, make_env=make_env, tool_names=aliases, tokenizer=None,
        make_executor=make_executor, count_calls=count_calls,
        preference_of=lambda task: preference_vector(task, aliases, default),
        evaluation=evaluation, kind_of=lambda task: task.family,
        policy_price=orchestrator_price(config, catalog))


__all__ = ["CachedGrader", "FallbackRetriever", "QAInputs", "build_qa_suite", "check_qa_config",
           "preference_vector", "read_prices", "read_qa_inputs"]
