"""Simulate a subscription business in the training-data contract, in chunks of customers.

Each chunk of customers is simulated day by day with numpy arrays across the chunk (never a Python loop over
customers), then written as row groups to one Parquet (or CSV) file per table, so a million customers with a
year of daily usage stay within a few GB of memory. The ground truth of every cancel request (its context, the
true save probability of every offer and which offers were eligible) goes to `_truth/requests.parquet`,
outside the contract, for evaluation only. docs/simulator.md tells the generative story.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from retention.contract import REASONS, SAVE_HORIZON_DAYS
from retention.offers import Catalog, load_catalog
from training.simulator import truth
from training.simulator.worlds import WORLDS, World

GENERATOR_VERSION = "sim-1"
TRUTH_TABLE = truth.TRUTH_FILE.with_suffix("").as_posix()  # written as <TRUTH_TABLE>.parquet
DAY_SECONDS = 86_400

COUNTRIES = [("US", "USD", 0.5), ("GB", "GBP", 0.15), ("DE", "EUR", 0.12), ("FR", "EUR", 0.08),
             ("CA", "CAD", 0.10), ("AU", "AUD", 0.05)]
AGE_BANDS = ["18-24", "25-34", "35-49", "50+"]
ACQUISITION = [("organic", 0.55), ("promo", 0.30), ("referral", 0.15)]
METRICS = ("listening_minutes", "titles_started")


@dataclass
class SimConfig:
    customers: int
    seed: int = 0
    days: int = 365
    window_start: date = date(2025, 11, 1)
    chunk_size: int = 50_000
    fmt: str = "parquet"
    catalog: Catalog = field(default_factory=load_catalog)
    world: World = field(default_factory=lambda: WORLDS["reference"])  # training.simulator.worlds

    @property
    def window_end(self) -> date:
        return self.window_start + timedelta(days=self.days)


def _choice(rng: np.random.Generator, options: list, n: int) -> np.ndarray:
    weights = np.array([o[-1] for o in options], dtype=float)
    return rng.choice(len(options), size=n, p=weights / weights.sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _survivor_satisfaction(rng: np.random.Generator, tenure_days: np.ndarray) -> np.ndarray:
    """Satisfaction of customers who have already been subscribed `tenure_days` at the window start.

    Unhappy customers churn sooner, so those still here after a long tenure are happier than new ones. Drawing
    everyone from N(0, 1) would start the window with a population that then visibly drifts as the unhappy
    leave (a start-up artefact, not something a real business shows), so the tenured are drawn from the
    survivor distribution: N(0, 1) reweighted by the chance of having survived their tenure (rejection
    sampling with the day-to-day hazard below and a typical 45% of requests ending in a cancel; satisfaction
    mean-reverts with a half-life of about 230 days, so at most that much history counts).
    """
    exposure = np.minimum(tenure_days, 230) * 0.0022 * 0.45
    sat = rng.normal(0.0, 1.0, len(tenure_days))
    todo = np.arange(len(sat))
    for _ in range(50):
        keep_p = np.exp(-exposure[todo] * (np.exp(-0.6 * sat[todo]) - np.exp(-0.6 * 4.0)))
        rejected = todo[rng.random(len(todo)) >= keep_p]
        if len(rejected) == 0:
            break
        sat[rejected] = rng.normal(0.0, 1.0, len(rejected))
        todo = rejected
    return sat


class _Writers:
    """One streaming writer per output file; a chunk is appended as a row group (Parquet) or rows (CSV)."""

    def __init__(self, out: Path, fmt: str):
        self.out, self.fmt, self.writers = out, fmt, {}

    def write(self, name: str, table: pa.Table, force_parquet: bool = False) -> None:
        fmt = "parquet" if force_parquet else self.fmt
        if name not in self.writers:
            path = self.out / f"{name}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                self.writers[name] = pq.ParquetWriter(path, table.schema, compression="zstd")
            else:
                self.writers[name] = pacsv.CSVWriter(path, table.schema)
        self.writers[name].write_table(table)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _timestamps(window_start: date, seconds: np.ndarray) -> pa.Array:
    base = np.datetime64(window_start, "s")
    return pa.array((base + seconds.astype("timedelta64[s]")).astype("datetime64[us]"), type=pa.timestamp("us"))


def simulate_dataset(cfg: SimConfig, out: str | Path, progress: Callable[[int], None] | None = None) -> dict:
    """Write a data set of `cfg.customers` customers to `out`; returns the manifest (also dataset.json)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writers = _Writers(out, cfg.fmt)
    counts = {"customers": 0, "nps_responses": 0, "usage": 0, "payments": 0, "cancel_requests": 0}
    try:
        for chunk, start in enumerate(range(0, cfg.customers, cfg.chunk_size)):
            n = min(cfg.chunk_size, cfg.customers - start)
            tables = _simulate_chunk(cfg, chunk, start, n)
            for name, table in tables.items():
                writers.write(name, table, force_parquet=name == TRUTH_TABLE)
                if name in counts:
                    counts[name] += table.num_rows
            if progress:
                progress(n)
    finally:
        writers.close()
    manifest = {
        "generator": GENERATOR_VERSION,
        "seed": cfg.seed,
        "customers": cfg.customers,
        "chunk_size": cfg.chunk_size,
        "window_start": datetime.combine(cfg.window_start, datetime.min.time(), UTC).isoformat(),
        "window_end": datetime.combine(cfg.window_end, datetime.min.time(), UTC).isoformat(),
        "catalog_version": cfg.catalog.version,
        "world": cfg.world.name,
        "horizon_months": cfg.world.horizon_months,
        "rows": counts,
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _simulate_chunk(cfg: SimConfig, chunk: int, start: int, n: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng([cfg.seed, chunk])
    # What only some worlds draw (latent types, unrecorded usage) comes from a stream of its own, so the
    # reference world's data stay the same whatever other worlds need.
    aux = np.random.default_rng([cfg.seed, chunk, 1])
    days = cfg.days
    catalog = cfg.catalog
    offers = catalog.offers
    world, response = cfg.world, cfg.world.response
    plans, channels = list(world.plans), list(world.channels)

    # --- who the customers are -------------------------------------------------------------------------
    ids = np.array([f"c{start + i:08d}" for i in range(n)], dtype=object)
    plan = _choice(rng, plans, n)
    plan_id = np.array([plans[p][0] for p in plan], dtype=object)
    period = np.array([plans[p][1] for p in plan], dtype=object)
    price = np.array([plans[p][2] for p in plan], dtype=float)
    annual = period == "annual"
    channel = np.array([c[0] for c in channels], dtype=object)[_choice(rng, channels, n)]
    ci = _choice(rng, COUNTRIES, n)
    country = np.array([c[0] for c in COUNTRIES], dtype=object)[ci]
    currency = np.array([c[1] for c in COUNTRIES], dtype=object)[ci]
    age_band = np.array(AGE_BANDS, dtype=object)[rng.integers(0, len(AGE_BANDS), n)]
    household = rng.integers(1, 6, n)
    acq = np.array([a[0] for a in ACQUISITION], dtype=object)[_choice(rng, ACQUISITION, n)]
    # 75% subscribed before the window (up to four years), the rest sign up during it.
    before = rng.random(n) < 0.75
    signup_day = np.where(before, -rng.integers(30, 1500, n), rng.integers(0, days - 1, n))
    signup_sec = signup_day * DAY_SECONDS + rng.integers(0, DAY_SECONDS, n)

    latent = response.latent_types(aux, {"acquisition": acq, "age_band": age_band, "household": household,
                                         "price": price, "annual": annual, "channel": channel})
    usage_recorded = aux.random(n) < world.usage_recorded

    sat = _survivor_satisfaction(rng, np.maximum(-signup_day, 0)) + 0.3 * (acq == "referral")
    price_sens = 1.5 * _sigmoid(
        1.3 * (acq == "promo") + 0.5 * (household >= 3) + 0.5 * (price > 20) - 0.4 * (price < 10)
        - 0.5 + 0.35 * rng.normal(0.0, 1.0, n)
    )

    # --- state ---------------------------------------------------------------------------------------------
    end_day = np.full(n, np.iinfo(np.int32).max, dtype=np.int64)
    paused_until = np.full(n, -1, dtype=np.int64)
    last_pause = np.full(n, -10_000, dtype=np.int64)
    disc_until = np.full(n, -1, dtype=np.int64)
    disc_pct = np.zeros(n)
    last_discount = np.full(n, -10_000, dtype=np.int64)
    last_reward = np.full(n, -10_000, dtype=np.int64)
    referred = np.zeros(n, dtype=bool)
    no_request_until = np.full(n, -1, dtype=np.int64)
    tech_until = np.full(n, -1, dtype=np.int64)
    last_nps = np.full(n, np.nan)
    cur_price = price.copy()
    cur_plan = plan_id.copy()
    minutes = np.zeros((n, days), dtype=np.float32)
    titles = np.zeros((n, days), dtype=np.float32)

    nps_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pay_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    req: dict[str, list[np.ndarray]] = {k: [] for k in (
        "idx", "sec", "reason", "offer", "propensity", "accepted", "stayed", "end_day")}
    truth_rows: dict[str, list[np.ndarray]] = {}

    doy0 = cfg.window_start.timetuple().tm_yday
    for d in range(days):
        doy = (doy0 + d) % 365
        weekday = (cfg.window_start.weekday() + d) % 7
        season = 0.2 * np.cos(2 * np.pi * (doy - 15) / 365)  # more listening in winter
        summer = 1.0 if 170 <= doy <= 245 else 0.0
        december = 1.0 if doy >= 335 else 0.0

        # Satisfaction drifts (AR(1), stationary sd ~1); technical incidents hurt it for two weeks.
        sat = 0.997 * sat + 0.077 * rng.normal(0.0, 1.0, n)
        new_tech = rng.random(n) < 0.0015
        tech_until = np.where(new_tech, d + 14, tech_until)
        tech = tech_until > d
        s_eff = sat - 0.8 * tech

        active = (signup_day <= d) & (d < end_day)
        paused = paused_until > d
        listening = active & ~paused

        # Usage: whether they listen today, then how much.
        p_day = _sigmoid(0.1 + 0.9 * s_eff + season + 0.3 * (weekday >= 5))
        on = listening & (rng.random(n) < p_day)
        k = np.flatnonzero(on)
        mins = rng.gamma(2.0, 22.0 * np.exp(0.25 * s_eff[k]))
        minutes[k, d] = np.round(mins, 1)
        titles[k, d] = rng.poisson(0.15 + mins / 120.0)

        # Payments on each renewal day, discounted while a discount runs; none while paused.
        period_days = np.where(annual, 365, 30)
        due = listening & ((d - signup_day) % period_days == 0)
        k = np.flatnonzero(due)
        if len(k):
            amount = cur_price[k] * np.where(disc_until[k] > d, 1.0 - disc_pct[k] / 100.0, 1.0)
            pay_rows.append((k, d * DAY_SECONDS + rng.integers(0, DAY_SECONDS, len(k)), np.round(amount, 2)))

        # NPS: occasional survey invitations; unhappy and very happy customers answer more often.
        invited = active & (rng.random(n) < 1.0 / 150.0)
        answers = invited & (rng.random(n) < np.minimum(0.05 + 0.12 * np.abs(s_eff), 0.5) * world.nps_answer_rate)
        k = np.flatnonzero(answers)
        if len(k):
            score = np.clip(np.round(7.2 + 1.9 * s_eff[k] + rng.normal(0.0, 0.9, len(k))), 0, 10)
            nps_rows.append((k, d * DAY_SECONDS + rng.integers(0, DAY_SECONDS, len(k)), score))
            last_nps[k] = score  # the request below happens later the same day at the earliest: see sec

        # Cancel requests: hazard rises as satisfaction falls.
        can_request = active & ~paused & (no_request_until <= d)
        hazard = 0.0022 * world.request_rate * np.exp(-0.6 * s_eff + 0.3 * price_sens)
        k = np.flatnonzero(can_request & (rng.random(n) < hazard))
        if len(k) == 0:
            continue
        m = len(k)
        u30 = minutes[k, max(d - 30, 0):d].sum(axis=1).astype(float)
        u60 = minutes[k, max(d - 90, 0):max(d - 30, 0)].sum(axis=1).astype(float)
        reason_logits = np.column_stack([
            1.3 * price_sens[k] - 0.4,                       # too_expensive
            -0.8 * (np.log1p(u30) - 5.0) - 0.3,              # not_using
            0.9 * summer + 0.6 * december - 0.5 + np.zeros(m),  # temporary
            2.2 * tech[k] - 1.0,                             # technical
            -0.3 + 0.2 * (titles[k, max(d - 30, 0):d].sum(axis=1) > 10),  # content
            -0.4 * s_eff[k] - 0.9,                           # switching
            -0.7 + np.zeros(m),                              # other
        ])
        reason_logits += response.reason_bias(None if latent is None else latent[k], m)
        reason = (reason_logits + rng.gumbel(size=reason_logits.shape)).argmax(axis=1)
        # Requests come after any NPS answer of the same day (seconds in the second half of the day),
        # so "last NPS before the request" in the truth is what the features can see.
        sec = d * DAY_SECONDS + DAY_SECONDS // 2 + rng.integers(0, DAY_SECONDS // 2, m)
        # NPS answers earlier the same day are before the request; make their seconds earlier than noon.
        ctx = truth.Context(
            reason=reason,
            nps_last=last_nps[k].copy(),
            usage_30=u30,
            usage_prev_60=u60,
            tenure_days=(sec - signup_sec[k]) / DAY_SECONDS,
            annual=annual[k],
            price=cur_price[k],
            billing_period=period[k],
            price_sensitivity=price_sens[k],
            satisfaction=s_eff[k],
            recent_discount=(d - last_discount[k]) < 90,
            latent_type=None if latent is None else latent[k],
        )
        eligible = {}
        for o in offers:
            ok = np.array([o.applies_to(bp, ch) for bp, ch in zip(period[k], channel[k], strict=True)])
            if o.type == "pause":
                ok &= (d - last_pause[k]) >= 365
            elif o.type == "discount":
                ok &= ((d - last_discount[k]) >= 90) & (disc_until[k] <= d)
            elif o.type == "downgrade":
                ok &= cur_price[k] > (o.to_price or 0.0) + 1e-9
            elif o.type in ("reward", "referral"):  # config/policy.toml [guardrails]: promoters only
                ok &= np.nan_to_num(ctx.nps_last, nan=0.0) >= 9
                if o.type == "reward":  # subscribed 12 months (of 30 days), at most one reward in 12 months
                    ok &= (ctx.tenure_days >= 360) & ((d - last_reward[k]) >= 360)
                else:  # never referred before
                    ok &= ~referred[k]
            eligible[o.id] = ok
        weights = np.column_stack([
            eligible[o.id] * world.logging_weight(o.type) for o in offers
        ])
        probs = weights / weights.sum(axis=1, keepdims=True)
        chosen = (probs.cumsum(axis=1) > rng.random(m)[:, None]).argmax(axis=1)
        propensity = probs[np.arange(m), chosen]
        p_all = np.column_stack([response.save_probability(o, ctx) for o in offers])
        p_stay = p_all[np.arange(m), chosen]
        stayed = rng.random(m) < p_stay
        is_none = np.array([offers[c].type == "none" for c in chosen])
        # An offer can be accepted and the customer still leave within 30 days: not a save.
        accepted = ~is_none & np.where(stayed, rng.random(m) < 0.9, rng.random(m) < 0.12)
        leave_day = np.where(accepted, d + rng.integers(5, SAVE_HORIZON_DAYS, m), d + rng.integers(1, 3, m))
        kk = k[~stayed]
        end_day[kk] = leave_day[~stayed]
        # A saved customer does not come back to the cancel flow within the save horizon.
        no_request_until[k[stayed]] = d + SAVE_HORIZON_DAYS + 1
        for j in np.flatnonzero(stayed & accepted):
            o, i = offers[chosen[j]], k[j]
            if o.type == "pause":
                paused_until[i], last_pause[i] = d + 30 * o.months, d
            elif o.type == "discount":
                disc_until[i], disc_pct[i], last_discount[i] = d + 30 * o.months, o.percent, d
            elif o.type == "downgrade":
                cur_price[i], cur_plan[i] = o.to_price, o.to_plan
            elif o.type == "credit":
                sat[i] += 0.2
            elif o.type == "reward":
                sat[i], last_reward[i] = sat[i] + 0.2, d
            elif o.type == "referral":
                referred[i] = True
            elif o.type == "followup" and tech[i]:
                sat[i] += 0.4
        for key, val in (("idx", k), ("sec", sec), ("reason", reason), ("offer", chosen),
                         ("propensity", propensity), ("accepted", accepted), ("stayed", stayed),
                         ("end_day", leave_day)):
            req[key].append(val)
        for key, val in (
            ("nps_last", ctx.nps_last), ("usage_30", u30), ("usage_prev_60", u60),
            ("tenure_days", ctx.tenure_days), ("annual", ctx.annual), ("price", ctx.price),
            ("billing_period", ctx.billing_period), ("price_sensitivity", ctx.price_sensitivity),
            ("satisfaction", ctx.satisfaction), ("recent_discount", ctx.recent_discount),
            ("reason", reason),
            *((("latent_type", ctx.latent_type),) if latent is not None else ()),
        ):
            truth_rows.setdefault(key, []).append(val)
        for j, o in enumerate(offers):
            truth_rows.setdefault(f"p_{o.id}", []).append(p_all[:, j])
            truth_rows.setdefault(f"eligible_{o.id}", []).append(eligible[o.id])

    return _chunk_tables(cfg, ids, locals())


def _chunk_tables(cfg: SimConfig, ids: np.ndarray, s: dict) -> dict[str, pa.Table]:
    """Turn one chunk's state into contract tables (and the truth table)."""
    days, ws = cfg.days, cfg.window_start
    offers = cfg.catalog.offers
    end_day = s["end_day"]
    ended_in_window = end_day < days
    end_sec = end_day * DAY_SECONDS + DAY_SECONDS // 2
    tables: dict[str, pa.Table] = {}
    attrs = {
        "customer_id": pa.array(ids, pa.string()),
        "signup_at": _timestamps(ws, s["signup_sec"]),
        # The plan the customer signed up with: the contract has no plan history, and writing the plan after
        # an accepted downgrade would leak the outcome of that cancel request into its own features.
        "plan_id": pa.array(s["plan_id"], pa.string()),
        "billing_period": pa.array(s["period"], pa.string()),
        "price": pa.array(s["price"], pa.float64()),
        "currency": pa.array(s["currency"], pa.string()),
        "billing_channel": pa.array(s["channel"], pa.string()),
        "country": pa.array(s["country"], pa.string()),
        "age_band": pa.array(s["age_band"], pa.string()),
        "household_size": pa.array(s["household"], pa.int64()),
        "acquisition": pa.array(s["acq"], pa.string()),
    }
    tables["customers"] = pa.table(attrs)

    def rows_of(parts):
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    # An NPS answer arrives in the first half of its day; cancel requests in the second half.
    k, sec, score = rows_of(s["nps_rows"])
    sec = (sec // DAY_SECONDS) * DAY_SECONDS + (sec % DAY_SECONDS) // 2
    order = np.lexsort((sec, k))
    tables["nps_responses"] = pa.table({
        "customer_id": pa.array(ids[k[order]], pa.string()),
        "responded_at": _timestamps(ws, sec[order]),
        "score": pa.array(score[order].astype(np.int64)),
        "comment": pa.nulls(len(k), pa.string()),
    })

    day_index = np.datetime64(ws, "D") + np.arange(days)
    frames = []
    for metric, mat in zip(("listening_minutes", "titles_started"), (s["minutes"], s["titles"]), strict=True):
        # Customers whose usage is not recorded (some worlds) have no usage rows: to the data they look like
        # customers who never listened, which is what a broken tracking pipeline looks like too.
        ci, di = np.nonzero(mat * s["usage_recorded"][:, None])
        frames.append(pa.table({
            "customer_id": pa.DictionaryArray.from_arrays(pa.array(ci.astype(np.int32)), pa.array(ids, pa.string())),
            "day": pa.array(day_index[di]),
            "metric": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(ci), np.int32)), pa.array([metric], pa.string())),
            "value": pa.array(np.round(mat[ci, di].astype(np.float64), 1)),
        }))
    tables["usage"] = pa.concat_tables(frames)

    k, sec, amount = rows_of(s["pay_rows"])
    tables["payments"] = pa.table({
        "customer_id": pa.array(ids[k], pa.string()),
        "paid_at": _timestamps(ws, sec),
        "amount": pa.array(amount.astype(np.float64)),
    })

    req = {key: (np.concatenate(v) if v else np.zeros(0)) for key, v in s["req"].items()}
    idx = req["idx"].astype(np.int64)
    n_req = len(idx)
    offer_ids = np.array([o.id for o in offers], dtype=object)
    chosen = offer_ids[req["offer"].astype(np.int64)] if n_req else np.zeros(0, dtype=object)
    request_ids = np.array([f"r{cfg.seed}-{s['chunk']}-{i:07d}" for i in range(n_req)], dtype=object)
    # ended_at is the end of the customer's subscription (empty while still active at the window end).
    in_window = ended_in_window[idx]
    ended_ts = pa.array(
        (np.datetime64(ws, "s") + np.where(in_window, end_sec[idx], 0).astype("timedelta64[s]")).astype(
            "datetime64[us]"),
        type=pa.timestamp("us"),
        mask=~in_window,
    )
    tables["cancel_requests"] = pa.table({
        "request_id": pa.array(request_ids, pa.string()),
        "customer_id": pa.array(ids[idx], pa.string()),
        "requested_at": _timestamps(ws, req["sec"].astype(np.int64)),
        "reason": pa.array(np.array(REASONS, dtype=object)[req["reason"].astype(np.int64)], pa.string()),
        "offer_id": pa.array([None if c == "none" else c for c in chosen], pa.string()),
        "propensity": pa.array(np.round(req["propensity"].astype(float), 6)),
        "accepted": pa.array(req["accepted"].astype(bool)),
        "ended_at": ended_ts,
    })
    truth_cols = {"request_id": pa.array(request_ids, pa.string()),
                  "logged_offer": pa.array(chosen.astype(str) if n_req else [], pa.string()),
                  "stayed_30d": pa.array(req["stayed"].astype(bool))}
    for key, parts in s["truth_rows"].items():
        arr = np.concatenate(parts)
        truth_cols[key] = pa.array(arr.astype(str) if arr.dtype == object else arr)
    if n_req == 0:  # a chunk without requests has no truth rows (and no columns to give them)
        return tables
    tables[TRUTH_TABLE] = pa.table(truth_cols)
    return tables
