"""Off-policy evaluation: what a policy would have been worth on logged cancel flows, from the probability
with which the logging policy chose each logged offer (its propensity).

For n logged flows with logged offer a_i, propensity p_i = pi_0(a_i | x_i) and reward r_i, a target policy pi
given as probabilities pi(a | x_i) over the offers (one-hot for a deterministic policy), and a reward model
q(x_i, a) (expected reward of each offer, fitted on other data):

- IPS:  mean(w_i r_i) with w_i = pi(a_i | x_i) / p_i. Unbiased when the propensities are right; high variance.
- SNIPS (self-normalised): sum(w_i r_i) / sum(w_i). A little biased, far less variable; what to read first
  when the weights are large.
- DR (doubly robust): mean(sum_a pi(a | x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i))). Unbiased if either the
  propensities or the reward model are right, and usually the least variable.

Intervals are 95% normal intervals from each estimator's per-flow terms (SNIPS by the delta method); a
difference between two policies is estimated on the same flows, paired, so what the two policies share
cancels. The effective sample size (sum w)^2 / sum w^2 says how many flows the estimate really rests on.

Why not a library: Open Bandit Pipeline has these estimators but pins old releases of its dependencies and
pulls in PyTorch; the formulas are a few lines of numpy each, tested against simulated truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    se: float

    @classmethod
    def of_terms(cls, terms: np.ndarray) -> Estimate:
        """The mean of i.i.d. per-flow terms with its 95% normal interval."""
        n = len(terms)
        if n == 0:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"))
        mean = float(np.mean(terms))
        se = float(np.std(terms, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
        return cls(mean, mean - Z95 * se, mean + Z95 * se, se)


@dataclass(frozen=True)
class PolicyValue:
    """A target policy's estimated value per flow, by each estimator, with its diagnostics."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    n: int  # logged flows evaluated on
    matched: int  # flows whose logged offer the target policy could also have chosen (w > 0)
    ess: float  # effective sample size of the importance weights


@dataclass(frozen=True)
class LoggedFlows:
    """What the log says: the offer shown (an index into the offers), its propensity and the reward."""

    actions: np.ndarray  # (n,) int
    propensities: np.ndarray  # (n,) in (0, 1]
    rewards: np.ndarray  # (n,) float

    def __post_init__(self) -> None:
        n = len(self.actions)
        if len(self.propensities) != n or len(self.rewards) != n:
            raise ValueError("actions, propensities and rewards must have the same length")
        p = np.asarray(self.propensities, dtype=float)
        if n and not (np.all(p > 0) and np.all(p <= 1)):
            raise ValueError("every logged propensity must be in (0, 1]")

    def subset(self, mask: np.ndarray) -> LoggedFlows:
        return LoggedFlows(self.actions[mask], self.propensities[mask], self.rewards[mask])

    def weights(self, target: np.ndarray) -> np.ndarray:
        """w_i = pi(a_i | x_i) / p_i for a target given as an (n, offers) matrix of probabilities."""
        n = len(self.actions)
        return target[np.arange(n), self.actions] / self.propensities

    def dr_terms(self, target: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The per-flow doubly robust terms (their mean is the DR estimate)."""
        n = len(self.actions)
        direct = (target * q).sum(axis=1)
        return direct + self.weights(target) * (self.rewards - q[np.arange(n), self.actions])


def evaluate(log: LoggedFlows, target: np.ndarray, q: np.ndarray) -> PolicyValue:
    """IPS, SNIPS and DR estimates of the value per flow of `target` ((n, offers) probabilities) on `log`,
    with the reward model `q` ((n, offers) expected rewards) for DR."""
    n = len(log.actions)
    w = log.weights(target)
    wr = w * log.rewards
    total = float(w.sum())
    if total > 0:
        snips_value = float(wr.sum() / total)
        # delta method for a ratio of means: var(w (r - V)) / mean(w)^2 / n
        se = float(np.sqrt(np.sum((w * (log.rewards - snips_value)) ** 2)) / total)
        snips = Estimate(snips_value, snips_value - Z95 * se, snips_value + Z95 * se, se)
    else:
        snips = Estimate(float("nan"), float("nan"), float("nan"), float("nan"))
    ess = float(total**2 / np.sum(w**2)) if total > 0 else 0.0
    return PolicyValue(ips=Estimate.of_terms(wr), snips=snips, dr=Estimate.of_terms(log.dr_terms(target, q)),
                       n=n, matched=int(np.count_nonzero(w)), ess=ess)


def dr_difference(log: LoggedFlows, target_a: np.ndarray, target_b: np.ndarray, q: np.ndarray) -> Estimate:
    """DR estimate of value(a) - value(b) on the same flows, paired: rows where the two agree add nothing."""
    return Estimate.of_terms(log.dr_terms(target_a, q) - log.dr_terms(target_b, q))


def one_hot(choices: np.ndarray, n_offers: int) -> np.ndarray:
    """A deterministic policy's choices (offer indices) as an (n, offers) probability matrix."""
    out = np.zeros((len(choices), n_offers))
    out[np.arange(len(choices)), choices] = 1.0
    return out
