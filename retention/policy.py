"""The decision policy: which offer, if any, for this cancel request now.

1. Guardrails (retention.eligibility) exclude offers first, each exclusion with a reason code.
2. The offer-response model scores every eligible offer and "no offer"; the policy picks the highest expected
   incremental net value: P(stay | offer) x (revenue kept - offer cost) - the same for no offer. If nothing
   beats no offer, the answer is `none` (code `no_offer_beats_none`).
3. Fail-open: with no verified model, a scoring error or a scoring time-out, the documented rules of
   config/policy.toml (NPS segment x reason) answer instead, with `fallback = True`. A decision always comes
   back; the caller is never blocked by us.
4. Exploration ([exploration] share of config/policy.toml, epsilon-greedy): outside experiments, a share of
   decisions gives an offer drawn uniformly from the eligible ones (guardrails first, always), with reason
   code `explored`. Every decision logs the exact probability of its offer, (1 - share) [offer is the
   policy's choice] + share / (eligible offers), and what recomputes it (`Decision.exploration`), so logged
   traffic can value any other policy off-policy (retention.ope). The draw is a hash of the customer, the
   time and the policy version: a replay of the same request explores the same way.
5. Shadow: where a challenger model is loaded (the registry's `challenger`), it decides every request too,
   after the champion and within the same scoring budget, without exploration; its choice is recorded with
   the decision (`Decision.shadow`) and never shown.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from marshmallow import ValidationError, post_load, validate

from retention.configfiles import (
    ConfigError,
    ConfigSchema,
    Int,
    Number,
    StrList,
    Table,
    above,
    at_least,
    context,
    load_file,
)
from retention.contract import REASONS
from retention.decision import (
    CancelRequest,
    Decision,
    Exploration,
    NpsAnswer,
    OfferScore,
    PastOffer,
    ShadowChoice,
    Snapshot,
)
from retention.eligibility import Guardrails, Standing, eligible_offers, exclusions
from retention.experiments import HOLDOUT, ExperimentBook
from retention.features import FeatureSpec
from retention.model import decision_columns
from retention.offers import Catalog, Offer
from retention.serving import live_features
from retention.value import DEFAULT_HORIZON_MONTHS, expected_net_value

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "config" / "policy.toml"
DEFAULT_EXPLORATION_SHARE = 0.05
MAX_EXPLORATION_SHARE = 0.5  # more than this is an experiment, not exploration: use config/experiments.toml
SEGMENTS = ("detractor", "passive", "promoter", "none")


class PolicyError(ConfigError):
    """config/policy.toml is invalid; each line names the file, the table and the key."""


@dataclass(frozen=True)
class PolicyConfig:
    version: str
    time_budget_ms: float
    close_the_loop_hours: float
    guardrails: Guardrails
    # segment -> reason -> offer ids in order of preference
    fallback: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    # Months of revenue a save is worth (retention.value): offers are judged by net revenue over this horizon.
    horizon_months: int = DEFAULT_HORIZON_MONTHS
    # The share of decisions (outside experiments) that explore: a uniformly drawn eligible offer.
    exploration_share: float = 0.0

    def fallback_offers(self, segment: str, reason: str) -> tuple[str, ...]:
        return self.fallback[segment][reason]


def rules_choice(config: PolicyConfig, segment: str, reason: str, allowed: set[str] | frozenset[str]) -> str:
    """The fallback rules' offer: the first of the segment's list for the reason that the guardrails allow,
    else none."""
    return next((o for o in config.fallback_offers(segment, reason) if o in allowed), "none")


def _in_catalog(offer_ids: tuple[str, ...]) -> None:
    catalog: Catalog = context()["catalog"]
    missing = [o for o in offer_ids if o not in catalog]
    if missing:
        raise ValidationError(f"offers {missing} are not in the catalog")


class _GuardrailsSchema(ConfigSchema):
    pause_once_per_days = Int(validate=at_least(0))
    discount_cooldown_days = Int(validate=at_least(0))
    max_offers_per_year = Int(validate=at_least(0))
    days_per_month = Int(validate=at_least(0))
    reward_min_tenure_months = Int(validate=at_least(0))
    reward_once_per_months = Int(validate=at_least(0))

    @post_load
    def _guardrails(self, data: dict, **_) -> Guardrails:
        return Guardrails(**data)  # a key left out keeps its default


class _Rules(ConfigSchema):
    """A [fallback.<segment>] table: cancel reason -> the offers to try, in order."""

    error_messages = {"unknown": f"not a cancel reason; the reasons are {list(REASONS)}"}


class _Tables(ConfigSchema):
    """[fallback]: the `default` rules and one table per NPS segment for the reasons where it differs."""

    error_messages = {"unknown": f"not an NPS segment; the tables are {['default', *SEGMENTS]}"}


_DefaultRules = _Rules.from_dict({r: StrList(validate=_in_catalog, required=True, error_messages={
    "required": "missing: the default table must list every reason"}) for r in REASONS}, name="DefaultRules")
_SegmentRules = _Rules.from_dict({r: StrList(validate=_in_catalog) for r in REASONS}, name="SegmentRules")
_Fallback = _Tables.from_dict({
    "default": Table(_DefaultRules, required=True, error_messages={
        "required": f"missing: it must list the offers for every reason {list(REASONS)}"}),
    **{segment: Table(_SegmentRules) for segment in SEGMENTS},
}, name="Fallback")


class _ValueSchema(ConfigSchema):
    horizon_months = Int(load_default=DEFAULT_HORIZON_MONTHS, validate=validate.Range(
        min=1, max=36, error="must be between {min} and {max} months, got {input}"))


class _ExplorationSchema(ConfigSchema):
    share = Number(load_default=DEFAULT_EXPLORATION_SHARE, validate=validate.Range(
        min=0.0, max=MAX_EXPLORATION_SHARE, error="must be between {min} and {max}, got {input}"))


class _PolicySchema(ConfigSchema):
    time_budget_ms = Number(load_default=150.0, validate=above(0))
    exploration = Table(_ExplorationSchema, load_default=lambda: {"share": DEFAULT_EXPLORATION_SHARE})
    value = Table(_ValueSchema, load_default=lambda: {"horizon_months": DEFAULT_HORIZON_MONTHS})
    close_the_loop_hours = Number(load_default=48.0, validate=above(0))
    guardrails = Table(_GuardrailsSchema, load_default=Guardrails)
    fallback = Table(_Fallback, required=True,
                     error_messages={"required": "required: [fallback.default] with the offers for every reason"})

    @post_load
    def _policy(self, data: dict, **_) -> PolicyConfig:
        # The version is a hash of the file and the catalog version, so any change to rules, guardrails or
        # offers yields a new policy_version.
        text, catalog = context()["text"], context()["catalog"]
        digest = hashlib.sha256((text + "\n" + catalog.version).encode()).hexdigest()[:10]
        tables = data["fallback"]
        fallback = {segment: {r: tables.get(segment, {}).get(r, tables["default"][r]) for r in REASONS}
                    for segment in SEGMENTS}
        return PolicyConfig(version=f"policy-{digest}", time_budget_ms=data["time_budget_ms"],
                            close_the_loop_hours=data["close_the_loop_hours"], guardrails=data["guardrails"],
                            fallback=fallback, horizon_months=data["value"]["horizon_months"],
                            exploration_share=float(data["exploration"]["share"]))


_POLICY = _PolicySchema()


def _label(keys: tuple, raw) -> str | None:
    if keys in (("guardrails",), ("value",), ("exploration",)) or (len(keys) == 2 and keys[0] == "fallback"):
        return "[" + ".".join(keys) + "]"
    return None


def load_policy(catalog: Catalog, path: str | Path = DEFAULT_POLICY) -> PolicyConfig:
    """Read and check config/policy.toml against the catalog; a PolicyError lists every problem."""
    return load_file(Path(path), _POLICY, PolicyError, "policy", _label, catalog=catalog)


class ModelScorer:
    """What a verified artifact contributes to decisions: its feature spec, its offer-response model in the
    served form (retention.scorers: numpy arrays, equal to the fitted estimator to 1e-9), and what its
    training decided about serving it.

    - `offers` is None when the artifact has no offer-response model (the data had no offer history): the
      rules choose offers (`no_offer_model`), with `offers_why` saying why.
    - `serves_policy` is the policy gate's verdict (training.selection.gate): False means the model's choices
      were not estimated to beat the rules on held-out flows, so the rules decide
      (`model_not_better_than_rules`), while p_stay is still reported.
    - `fixed_offer`: where the gate found one fixed offer clearly better than the rules and not worse than
      the model (verdict "fixed"), it is given wherever allowed, elsewhere the rules decide.
    - `allowed`: the offers the gate let the model choose (offers whose use did not pay on logged flows are
      dropped); the others are still scored and reported, never chosen by the model.
    `reference_p_stay` scores the same rows with the fitted estimator (only where one was unpickled: checks)."""

    def __init__(self, offers, meta: dict, estimator=None, ignore_gate: bool = False) -> None:
        self.offers = offers
        self.estimator = estimator
        self.version: str = meta["version"]
        self.spec = FeatureSpec.from_dict(meta["feature_spec"])
        model = (meta.get("models") or {}).get("offer_response") or {}
        self.offers_why: str | None = None if offers is not None else model.get("why", "no offer-response model")
        gate = model.get("gate") or {}
        self.gate_verdict: str = gate.get("verdict", "model") if offers is not None else "rules"
        self.serves_policy = offers is not None and (ignore_gate or self.gate_verdict == "model")
        # The gate's verdict "fixed": one offer, given wherever it is allowed, beat both the model and the rules.
        self.fixed_offer: str | None = (gate.get("fixed_offer") if offers is not None and not ignore_gate
                                        and self.gate_verdict == "fixed" else None)
        # The offers the gate let the model choose (training.selection.allowed_offers); None: every offer.
        allowed = gate.get("offers_allowed")
        self.allowed: frozenset[str] | None = None if ignore_gate or allowed is None else frozenset(allowed)
        self.columns: list[str] = list((meta.get("feature_names") or {}).get("offer_response", []))

    @classmethod
    def from_estimator(cls, model: dict, meta: dict, catalog: Catalog, ignore_gate: bool = False) -> ModelScorer:
        """From an unpickled artifact's estimators (offline evaluation): the served form is compiled here."""
        from retention.scorers import compile_estimator

        estimator = model.get("offer_response")
        offers = compile_estimator(estimator, catalog) if estimator is not None else None
        return cls(offers, meta, estimator, ignore_gate)

    def p_stay(self, features: dict[str, object], reason: str, offers: list[Offer]) -> list[float]:
        return self.offers.predict_proba(features, [(reason, o.id) for o in offers]).tolist()

    def reference_p_stay(self, features: dict[str, object], reason: str, offers: list[Offer]) -> list[float]:
        if self.estimator is None:
            raise RuntimeError("this scorer was built from the served form only; there is no estimator")
        import pandas as pd  # lazily: only for checks, never in the request path

        frame = pd.DataFrame([{**features, **decision_columns(o, reason)} for o in offers])
        return [float(p) for p in self.estimator.predict_proba(frame)[:, 1]]


class Policy:
    """Decides offers. Thread-safe; one per process (the executor is recreated after a fork)."""

    def __init__(self, catalog: Catalog, config: PolicyConfig, scorer: ModelScorer | None,
                 experiments: ExperimentBook | None = None, shadow: ModelScorer | None = None) -> None:
        self.catalog = catalog
        self.config = config
        self.scorer = scorer
        self.shadow = shadow  # the challenger: scored beside the champion, never shown
        self.experiments = experiments or ExperimentBook((), "none")
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = -1
        self._lock = threading.Lock()

    @property
    def spec(self) -> FeatureSpec:
        """The model's features; without a model only the request's own fields are used."""
        return self.scorer.spec if self.scorer else FeatureSpec((), (), ())

    def decide(
        self,
        request: CancelRequest,
        snapshot: Snapshot | None,
        now: datetime,
        history: list[PastOffer] | None = (),
        nps_answers: list[NpsAnswer] = (),
    ) -> Decision:
        """`history` None means the customer's history could not be read (see eligibility).

        Experiments come after the guardrails (retention.experiments): an entrant's arm decides, and a
        "model" or "rules" arm decides as the service would outside the experiment, without exploring (the
        arm's share is the entrant's propensity). Everyone else meets the exploring policy."""
        eligible, codes, common = self._prepare(request, snapshot, now, history, nps_answers)
        arm, why = self.experiments.assign(request.customer_id, now, request.reason, request.plan_id,
                                           common["nps_segment"], request.billing_channel, (o.id for o in eligible))
        if why:
            codes.append(why)
        if arm is None:
            decision = self._explore(self._model(request, eligible, codes, common), eligible, request.customer_id, now)
            return self._with_shadow(decision, request, eligible, codes, common)
        if arm.kind == "model":
            decision = self._model(request, eligible, codes, common)
        elif arm.kind == "rules":
            decision = self._rules(request, eligible, codes, common)
        else:  # a fixed offer (checked eligible on entry) or no offer
            offer = self.catalog[arm.offer or "none"]
            decision = Decision(offer=offer, reason_codes=tuple(codes), fallback=False, **common)
        arm_code = "experiment_holdout" if arm.variant == HOLDOUT else f"experiment_{arm.kind}"
        return replace(decision, experiment=arm, propensity=arm.share,
                       reason_codes=decision.reason_codes + (arm_code,))

    def _with_shadow(self, decision: Decision, request: CancelRequest, eligible: list[Offer], codes: list[str],
                     common: dict) -> Decision:
        """`decision` with the challenger's own choice on the same request recorded beside it."""
        shadow = self.shadow
        if shadow is None:
            return decision
        theirs = self._model(request, eligible, list(codes), common, scorer=shadow)
        mine = decision.exploration.policy_offer if decision.exploration else decision.offer.id
        failed = next((c for c in theirs.reason_codes if c in ("scoring_timeout", "scoring_error")), None)
        return replace(decision, shadow=ShadowChoice(
            version=shadow.version, offer=theirs.offer.id, p_stay=theirs.p_stay,
            expected_incremental_value=theirs.expected_incremental_value, agrees=theirs.offer.id == mine,
            error=failed))

    def _model(self, request: CancelRequest, eligible: list[Offer], codes: list[str], common: dict,
               scorer: ModelScorer | None = None) -> Decision:
        """The model's decision (the champion's, or `scorer`'s: the challenger in the shadow)."""
        scorer = scorer or self.scorer
        if scorer is None:
            return self._rules(request, eligible, codes + ["model_unavailable"], common)
        if scorer.offers is None:
            return self._rules(request, eligible, codes + ["no_offer_model"], common)
        try:
            p_stay = self._score_within_budget(scorer, common["features"], request.reason, eligible)
        except FutureTimeout:
            return self._rules(request, eligible, codes + ["scoring_timeout"], common)
        except Exception:  # noqa: BLE001 - fail open on any scoring failure; the adapter logs and counts it
            return self._rules(request, eligible, codes + ["scoring_error"], common)

        values = {s.offer_id: s for s in _value(p_stay, eligible, request, self.config.horizon_months)}
        if not scorer.serves_policy:
            # The gate found the model's choices no better than the rules': the rules choose (or, where the
            # gate found one fixed offer better than both, that offer wherever it is allowed); what the model
            # predicts for the choice is still reported.
            fixed = scorer.fixed_offer
            if fixed is not None and fixed in values:
                chosen = values[fixed]
                return Decision(offer=self.catalog[fixed], reason_codes=tuple(
                    codes + ["model_not_better_than_rules", "fixed_offer_better_than_rules"]), fallback=False,
                    model_version=scorer.version, p_stay=chosen.p_stay,
                    expected_incremental_value=chosen.incremental_value, scores=tuple(values.values()), **common)
            ruled = self._rules(request, eligible, codes + ["model_not_better_than_rules"], common)
            chosen = values[ruled.offer.id]
            return replace(ruled, model_version=scorer.version, p_stay=chosen.p_stay,
                           expected_incremental_value=chosen.incremental_value, scores=tuple(values.values()))
        allowed = scorer.allowed if scorer.allowed is not None else values
        best = max((v for v in values.values() if v.offer_id in allowed or v.offer_id == "none"),
                   key=lambda s: (s.incremental_value, s.offer_id == "none"))
        if best.offer_id == "none" or best.incremental_value <= 0:
            best = values["none"]
            codes.append("no_offer_beats_none")
        else:
            codes.append("best_incremental_value")
        return Decision(
            offer=self.catalog[best.offer_id],
            reason_codes=tuple(codes),
            fallback=False,
            model_version=scorer.version,
            p_stay=best.p_stay,
            expected_incremental_value=best.incremental_value,
            scores=tuple(values.values()),
            **common,
        )

    def _explore(self, decision: Decision, eligible: list[Offer], customer_id: str, now: datetime) -> Decision:
        """Epsilon-greedy over the eligible offers (see the module docstring); `decision` is the policy's."""
        share = self.config.exploration_share
        if share <= 0 or len(eligible) < 2:
            return decision
        u = exploration_draw(customer_id, now, self.config.version)
        explored = u < share
        offer = eligible[min(int(u / share * len(eligible)), len(eligible) - 1)] if explored else decision.offer
        propensity = (1 - share) * (offer.id == decision.offer.id) + share / len(eligible)
        values = {s.offer_id: s.incremental_value for s in decision.scores}
        # What exploring gives up on average, by the model's own estimate (None without model scores):
        # share x (the policy's choice - the mean over the eligible offers), in expected incremental value.
        cost = (share * (values[decision.offer.id] - sum(values[o.id] for o in eligible) / len(eligible))
                if values and all(o.id in values for o in eligible) else None)
        record = Exploration(share=share, policy_offer=decision.offer.id, eligible=tuple(o.id for o in eligible),
                             explored=explored, expected_cost=cost)
        if not explored:
            return replace(decision, propensity=propensity, exploration=record)
        chosen = next((s for s in decision.scores if s.offer_id == offer.id), None)
        return replace(decision, offer=offer, propensity=propensity, exploration=record,
                       reason_codes=decision.reason_codes + ("explored",),
                       p_stay=chosen.p_stay if chosen else None,
                       expected_incremental_value=chosen.incremental_value if chosen else None)

    def rules_decision(self, request: CancelRequest, snapshot: Snapshot | None, now: datetime,
                       history: list[PastOffer] = ()) -> Decision:
        """What the fallback rules alone answer (the cold-start policy, and a baseline for the model)."""
        eligible, codes, common = self._prepare(request, snapshot, now, history, ())
        return self._rules(request, eligible, codes, common)

    def _prepare(self, request, snapshot, now, history, nps_answers) -> tuple[list[Offer], list[str], dict]:
        """Guardrails and live features: everything both the model and the rules decide from."""
        known = None if history is None else list(history)
        features, context = live_features(self.spec, request, snapshot, now, known or [], list(nps_answers))
        # The promoter-only offers (reward, referral) need the NPS segment and tenure as of now.
        excluded = exclusions(self.catalog, request, known, now, self.config.guardrails, Standing.of(features))
        segment = str(features["nps_segment"])
        codes = context + [f"reason_{request.reason}"] + _dedup(c for cs in excluded.values() for c in cs)
        if segment == "detractor":
            codes.append("close_the_loop")
        common = dict(
            policy_version=self.config.version,
            catalog_version=self.catalog.version,
            excluded=excluded,
            features=features,
            nps_segment=segment,
            close_the_loop_by=(now + timedelta(hours=self.config.close_the_loop_hours)
                               if segment == "detractor" else None),
        )
        return eligible_offers(self.catalog, excluded), codes, common

    def _rules(self, request: CancelRequest, eligible: list[Offer], codes: list[str], common: dict) -> Decision:
        choice = rules_choice(self.config, common["nps_segment"], request.reason, {o.id for o in eligible})
        codes = codes + ["fallback_rules", "rule_no_offer" if choice == "none" else f"rule_{choice}"]
        return Decision(offer=self.catalog[choice], reason_codes=tuple(codes), fallback=True, **common)

    def _score_within_budget(self, scorer: ModelScorer, features: dict, reason: str, offers: list[Offer]) -> list[float]:
        """Score in a worker thread so a slow model cannot hold the request past the time budget."""
        future = self._pool().submit(scorer.p_stay, features, reason, offers)
        return future.result(timeout=self.config.time_budget_ms / 1000.0)

    def _pool(self) -> ThreadPoolExecutor:
        # A pool created before gunicorn forks has no live threads in the child; make one per process.
        with self._lock:
            if self._executor is None or self._executor_pid != os.getpid():
                self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoring")
                self._executor_pid = os.getpid()
            return self._executor

    def close(self) -> None:
        if self._executor is not None and self._executor_pid == os.getpid():
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _value(p_stay: list[float], offers: list[Offer], request: CancelRequest, horizon_months: int) -> list[OfferScore]:
    nets = [float(expected_net_value(o, p, request.price, request.billing_period, horizon_months))
            for o, p in zip(offers, p_stay, strict=True)]
    none_net = next(n for o, n in zip(offers, nets, strict=True) if o.id == "none")
    return [OfferScore(o.id, p, n, n - none_net) for o, p, n in zip(offers, p_stay, nets, strict=True)]


def exploration_draw(customer_id: str, now: datetime, policy_version: str) -> float:
    """A uniform number in [0, 1) fixed by the customer, the decision time and the policy version."""
    digest = hashlib.sha256(f"{customer_id}|{now.isoformat()}|{policy_version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _dedup(items) -> list[str]:
    return list(dict.fromkeys(items))

