"""The command line's plain-text view of a drift report (retention.drift): per-feature PSI with its verdict,
the bin that moved most, and the offer mix against the served policy's at training."""

from __future__ import annotations

from reports.formatting import ASCII_DASH, count, fixed, percent
from retention.drift import MAJOR, MODERATE, DriftReport, verdict


def _psi(x) -> str:
    return fixed(x, 4, grouping=False, missing=ASCII_DASH)


def _share(x) -> str:
    return percent(x, missing=ASCII_DASH)


def drift_text(r: DriftReport, days: float) -> str:
    lines = [f"drift of {count(r.decisions)} decision(s) of the last {days:g} day(s) against model "
             f"{r.model_version}" + (f", trained on {r.reference}" if r.reference else ""),
             f"PSI: below {MODERATE:g} stable, {MODERATE:g} to {MAJOR:g} moderate, {MAJOR:g} and more major; "
             "'noise' is the PSI sampling alone gives without any drift"]
    if r.why:
        lines.append(f"features: {r.why}")
    else:
        w = max(len("feature"), *(len(f.name) for f in r.features))
        b = max(len("bin that moved most"), *(len(f.bin) for f in r.features))
        lines.append(f"  {'feature':<{w}} {'PSI':>8}  {'verdict':<8} {'noise':>7}  {'bin that moved most':<{b}} "
                     f"{'training':>8} {'live':>8}")
        for f in r.features:
            lines.append(f"  {f.name:<{w}} {_psi(f.psi):>8}  {f.verdict:<8} {_psi(f.noise):>7}  {f.bin:<{b}} "
                         f"{_share(f.expected):>8} {_share(f.actual):>8}")
        lines.append(f"max PSI {_psi(r.max_psi)} ({r.max_feature}): {verdict(r.max_psi)}")
    lines.append("")
    if r.offer_mix is None:
        lines.append(f"offer mix: {r.offer_mix_why}")
    else:
        m = r.offer_mix
        lines.append(f"offer mix of {count(m.live_decisions)} decision(s) against the served policy ({m.policy}) on "
                     f"held-out flows at training" + (f"; {count(r.offer_mix_excluded)} left out (another model, a "
                                                      "scoring failure or an experiment arm)"
                                                      if r.offer_mix_excluded else ""))
        w = max(len("offer"), *(len(o) for o in m.shares))
        lines.append(f"  {'offer':<{w}} {'training':>8} {'live':>8}")
        for offer, (expected, actual) in sorted(m.shares.items(), key=lambda x: (-x[1][0], x[0])):
            lines.append(f"  {offer:<{w}} {_share(expected):>8} {_share(actual):>8}")
        lines.append(f"offer-mix PSI {_psi(m.psi)} (noise {_psi(m.noise)}): {m.verdict}")
    return "\n".join(lines)
