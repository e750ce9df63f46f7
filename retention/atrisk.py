"""The proactive risk list's rules (issue 16 item 4): which features explain a customer's churn risk (reason
codes), and what to do about an at-risk customer. Pure numpy; the scoring and how well a list ranks (its top-decile
lift) are training.atrisk, the command `retention at-risk`."""

from __future__ import annotations

import numpy as np

ACTIONS: tuple[str, ...] = ("follow-up", "reward", "offer at cancel", "watch")
# A passive or silent customer this many times as risky as the average active customer is likely to reach the
# cancel flow soon: the action is the flow's offer (the policy decides there), not a contact now.
HIGH_RISK_MULTIPLE = 2.0


def suggest_action(segment: str | None, risk: float, base_rate: float) -> str:
    """A detractor gets a personal follow-up (fix the cause: the NPS practice); a promoter at risk a loyalty
    reward (offer type `reward`); anyone else an offer when they come to cancel if their risk is at least
    HIGH_RISK_MULTIPLE x the base rate, else watching."""
    if segment == "detractor":
        return "follow-up"
    if segment == "promoter":
        return "reward"
    return "offer at cancel" if risk >= HIGH_RISK_MULTIPLE * base_rate else "watch"


def reason_codes(contributions: np.ndarray, names: list[str], k: int) -> list[list[tuple[str, float]]]:
    """For each row of `contributions` (rows x features, how much each feature raises the row's risk), the
    `k` features that raise it most, largest first, as (name, contribution); features that lower the risk or
    leave it unchanged are never a reason."""
    out = []
    for row in np.asarray(contributions, dtype="float64"):
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(names[j], float(row[j])) for j in order if row[j] > 0])
    return out
