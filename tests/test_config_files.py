"""The config files (offers, policy, experiments TOML) through their schemas (retention.configfiles): every
rule refused with a line naming the file, where and the field; every problem of a file in one run; strict
types; the identity of the checked-in files (catalog version, policy_version, definition hashes) unchanged;
and the command line and the service stopping cleanly on a bad file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from samples import SECOND, THREE_ARMS

from bench.run import free_port
from cli import main
from retention.configfiles import ConfigError
from retention.experiments import ExperimentError, load_experiments
from retention.offers import CatalogError, load_catalog
from retention.policy import PolicyError, load_policy

ROOT = Path(__file__).resolve().parents[1]
CATALOG = load_catalog()


def _refused(error: type[ConfigError], load, path: Path, text: str) -> list[str]:
    path.write_text(text)
    with pytest.raises(error) as info:
        load(path)
    lines = list(info.value.lines)
    assert str(info.value) == "\n".join(lines)
    assert lines and all(line.startswith(f"{path}: ") for line in lines), lines
    return [line.removeprefix(f"{path}: ") for line in lines]


# --------------------------------------------------------------------------------------------- identity


def test_the_checked_in_files_keep_their_identity():
    # Pinned on the hand-written loaders (commit e547daf): decisions are stored under these, and analysis
    # matches an experiment's decisions by its definition hash, so a loader change must not move them.
    # The catalog was 2026-11-25 until it gained the reward and referral offers (issue 16).
    assert CATALOG.version == "2026-12-01"
    # policy-b9ff3fec10 until the file gained its [value] section (the value horizon as configuration),
    # policy-9321a4c343 until it gained [exploration], policy-7f22b37dc8 until the reward guardrails and
    # rules (and the catalog version above).
    assert load_policy(CATALOG, ROOT / "config" / "policy.toml").version == "policy-8c213db570"
    book = load_experiments(CATALOG, ROOT / "config" / "experiments.example.toml")
    assert book.version == "aecef65c7e"
    assert {e.name: e.definition_hash() for e in book.experiments} == {"offer-variants": "6e25e7936296"}


def test_the_checked_in_files_load_into_the_same_objects():
    assert [(o.id, o.type, o.months, o.percent, o.to_price, o.credits, o.cost) for o in CATALOG.offers] == [
        ("none", "none", 0, 0.0, None, 0, 0.0), ("pause_1m", "pause", 1, 0.0, None, 0, 0.0),
        ("pause_2m", "pause", 2, 0.0, None, 0, 0.0), ("pause_3m", "pause", 3, 0.0, None, 0, 0.0),
        ("discount_30_3m", "discount", 3, 30.0, None, 0, 0.0), ("discount_50_2m", "discount", 2, 50.0, None, 0, 0.0),
        ("downgrade_lite", "downgrade", 0, 0.0, 7.95, 0, 0.0), ("credit_1", "credit", 0, 0.0, None, 1, 4.0),
        ("followup", "followup", 0, 0.0, None, 0, 3.0), ("reward_loyalty", "reward", 0, 0.0, None, 2, 5.0),
        ("referral_both", "referral", 0, 0.0, None, 1, 4.0)]
    referral = CATALOG["referral_both"]
    assert (referral.friend_cost, referral.signup_rate, referral.signup_value) == (4.0, 0.15, 60.0)
    assert all(isinstance(o.percent, float) and isinstance(o.cost, float) for o in CATALOG.offers)
    assert CATALOG["credit_1"].channels == ("web", "ios", "android", "partner")
    assert CATALOG["pause_1m"].billing_periods == ("monthly",) and CATALOG["none"].display_key == "offer.none"
    policy = load_policy(CATALOG)
    assert (policy.time_budget_ms, policy.close_the_loop_hours) == (150.0, 48.0)
    assert policy.fallback_offers("detractor", "content") == ("followup", "credit_1")
    assert policy.fallback_offers("passive", "content") == ("credit_1",)  # from [fallback.default]
    assert policy.fallback_offers("none", "other") == ()
    (e,) = load_experiments(CATALOG, ROOT / "config" / "experiments.example.toml").experiments
    assert (e.slice, e.holdout, e.control, e.stop) == ((0.0, 1.0), 0.1, "model", None)
    assert [(v.name, v.kind, v.weight, v.offer) for v in e.variants] == [
        ("model", "model", 1.0, None), ("discount_50_2m", "offer", 1.0, "discount_50_2m"),
        ("pause_1m", "offer", 1.0, "pause_1m")]


# --------------------------------------------------------------------------------------------- the catalog

CATALOG_TEXT = """
version = "test-1"

[[offer]]
id = "none"
type = "none"

[[offer]]
id = "pause_1m"
type = "pause"
months = 1

[[offer]]
id = "discount_30_3m"
type = "discount"
percent = 30
months = 3
"""


def _catalog_refused(tmp_path: Path, text: str) -> list[str]:
    return _refused(CatalogError, load_catalog, tmp_path / "offers.toml", text)


def test_percent_as_a_string_is_a_catalog_error_naming_the_file_and_the_field(tmp_path):
    # It used to escape as a bare TypeError ('<' between str and int) and kill the service's start.
    path = tmp_path / "offers.toml"
    path.write_text(CATALOG_TEXT.replace("percent = 30", 'percent = "50"'))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value) == f'{path}: offer #3 (discount_30_3m): percent: must be a number, got "50"'


@pytest.mark.parametrize("offer, line", [
    ('id = "p"\ntype = "pause"\nmonths = 4', "offer #4 (p): months: a pause lasts 1, 2 or 3 months, got 4"),
    ('id = "p"\ntype = "pause"\nmonths = 0', "offer #4 (p): months: a pause lasts 1, 2 or 3 months, got 0"),
    ('id = "p"\ntype = "pause"\nmonths = 1.5', "offer #4 (p): months: must be an integer, got 1.5"),
    ('id = "p"\ntype = "pause"\nmonths = true', "offer #4 (p): months: must be an integer, got true"),
    ('id = "p"\ntype = "pause"', "offer #4 (p): months: required for type 'pause'"),
    ('id = "d"\ntype = "discount"\npercent = 100\nmonths = 2',
     "offer #4 (d): percent: a discount's percent must be in (0, 100), got 100"),
    ('id = "d"\ntype = "discount"\npercent = 0\nmonths = 2',
     "offer #4 (d): percent: a discount's percent must be in (0, 100), got 0"),
    ('id = "d"\ntype = "discount"\npercent = "50"\nmonths = 2', 'offer #4 (d): percent: must be a number, got "50"'),
    ('id = "d"\ntype = "discount"\npercent = nan\nmonths = 2', "offer #4 (d): percent: must be a number, got nan"),
    ('id = "d"\ntype = "discount"\npercent = 50\nmonths = 13', "offer #4 (d): months: a discount lasts 1..12 months, got 13"),
    ('id = "d"\ntype = "discount"\nmonths = 2', "offer #4 (d): percent: required for type 'discount'"),
    ('id = "g"\ntype = "downgrade"\nto_plan = "lite"', "offer #4 (g): to_price: required for type 'downgrade'"),
    ('id = "g"\ntype = "downgrade"\nto_price = 5', "offer #4 (g): to_plan: required for type 'downgrade'"),
    ('id = "g"\ntype = "downgrade"\nto_plan = "lite"\nto_price = -1', "offer #4 (g): to_price: must be >= 0, got -1.0"),
    ('id = "c"\ntype = "credit"', "offer #4 (c): credits: required for type 'credit'"),
    ('id = "c"\ntype = "credit"\ncredits = 1.0', "offer #4 (c): credits: must be an integer, got 1.0"),
    ('id = "f"\ntype = "followup"\ncost = -1', "offer #4 (f): cost: must be >= 0, got -1.0"),
    ('id = "f"\ntype = "followup"\ncost = "3"', 'offer #4 (f): cost: must be a number, got "3"'),
    ('id = "f"\ntype = "followup"\nenabled = "yes"', 'offer #4 (f): enabled: must be true or false, got "yes"'),
    ('id = "f"\ntype = "followup"\nenabled = 1', "offer #4 (f): enabled: must be true or false, got 1"),
    ('id = "f"\ntype = "followup"\nbilling_periods = ["weekly"]',
     "offer #4 (f): billing_periods: unknown value(s) ['weekly']; use some of ['monthly', 'annual']"),
    ('id = "f"\ntype = "followup"\nbilling_periods = "monthly"',
     'offer #4 (f): billing_periods: must be an array of strings, got "monthly"'),
    ('id = "f"\ntype = "followup"\nchannels = ["web", "fax"]',
     "offer #4 (f): channels: unknown value(s) ['fax']; use some of ['web', 'ios', 'android', 'partner']"),
    ('id = "f"\ntype = "followup"\ndisplay_key = ""', "offer #4 (f): display_key: must not be empty"),
    ('id = "f"\ntype = "followup"\ncolour = "red"', "offer #4 (f): colour: unknown key"),
    ('id = "f"\ntype = "bribe"', "offer #4 (f): type: must be one of none, pause, discount, downgrade, credit, "
                                "followup, reward, referral, got 'bribe'"),
    ('type = "followup"', "offer #4 (?): id: required"),
    ('id = "follow-up"\ntype = "followup"', "offer #4 (follow-up): id: must be an identifier (letters, digits, '_'), "
                                           "got 'follow-up'"),
    ('id = 7\ntype = "followup"', "offer #4 (7): id: must be a string, got 7"),
    ('id = "pause_1m"\ntype = "followup"', "offer #4 (pause_1m): id: duplicate: offer #2 has the id 'pause_1m' too"),
])
def test_each_offer_rule_is_refused_naming_the_offer_and_the_field(tmp_path, offer, line):
    assert _catalog_refused(tmp_path, CATALOG_TEXT + "\n[[offer]]\n" + offer + "\n") == [line]


@pytest.mark.parametrize("offer, line", [
    ('id = "r"\ntype = "reward"\ncredits = 2', "offer #4 (r): cost: required for type 'reward'"),
    ('id = "r"\ntype = "reward"\ncost = 5.0', "offer #4 (r): credits: required for type 'reward'"),
    ('id = "r"\ntype = "reward"\ncredits = 0\ncost = 5.0', "offer #4 (r): credits: a reward gives at least 1 credit, got 0"),
    ('id = "r"\ntype = "reward"\ncredits = 1\ncost = -1', "offer #4 (r): cost: must be >= 0, got -1.0"),
    ('id = "r"\ntype = "reward"\ncredits = 1\ncost = 5.0\nsignup_rate = 0.1',
     "offer #4 (r): signup_rate: only for type 'referral', not 'reward'"),
    ('id = "c"\ntype = "credit"\ncredits = 1\nfriend_cost = 4.0',
     "offer #4 (c): friend_cost: only for type 'referral', not 'credit'"),
    ('id = "f"\ntype = "referral"\ncredits = 1\ncost = 4.0\nfriend_cost = 4.0\nsignup_value = 60.0',
     "offer #4 (f): signup_rate: required for type 'referral'"),
    ('id = "f"\ntype = "referral"\ncredits = 1\ncost = 4.0\nfriend_cost = 4.0\nsignup_rate = 1.5\nsignup_value = 60.0',
     "offer #4 (f): signup_rate: must be between 0.0 and 1.0, got 1.5"),
    ('id = "f"\ntype = "referral"\ncredits = 1\ncost = 4.0\nfriend_cost = 4.0\nsignup_rate = "0.1"\nsignup_value = 60.0',
     'offer #4 (f): signup_rate: must be a number, got "0.1"'),
    ('id = "f"\ntype = "referral"\ncredits = 1\ncost = 4.0\nfriend_cost = -4.0\nsignup_rate = 0.1\nsignup_value = 60.0',
     "offer #4 (f): friend_cost: must be >= 0, got -4.0"),
])
def test_each_reward_and_referral_rule_is_refused_naming_the_file_the_offer_and_the_field(tmp_path, offer, line):
    assert _catalog_refused(tmp_path, CATALOG_TEXT + "\n[[offer]]\n" + offer + "\n") == [line]


def test_a_referral_with_every_field_loads(tmp_path):
    path = tmp_path / "offers.toml"
    path.write_text(CATALOG_TEXT + '\n[[offer]]\nid = "ref"\ntype = "referral"\ncredits = 1\ncost = 4.0\n'
                    'friend_cost = 3.0\nsignup_rate = 0.2\nsignup_value = 50.0\n')
    ref = load_catalog(path)["ref"]
    assert (ref.type, ref.credits, ref.cost, ref.friend_cost, ref.signup_rate, ref.signup_value) == (
        "referral", 1, 4.0, 3.0, 0.2, 50.0)


@pytest.mark.parametrize("text, line", [
    (CATALOG_TEXT.replace('version = "test-1"', ""), "version: required"),
    (CATALOG_TEXT.replace('version = "test-1"', 'version = ""'), "version: must not be empty"),
    (CATALOG_TEXT.replace('version = "test-1"', "version = 2026-11-25"), "version: must be a string, got 2026-11-25"),
    (CATALOG_TEXT.replace('version = "test-1"', 'version = "test-1"\nowner = "me"'), "owner: unknown key"),
    ('version = "test-1"\n', "offer: at least one [[offer]] is required"),
    ('version = "test-1"\noffer = []\n', "offer: at least one [[offer]] is required"),
    ('version = "test-1"\n[offer]\nid = "none"\ntype = "none"\n', "offer: must be an array of tables, e.g. [[offer]]"),
    (CATALOG_TEXT.replace('id = "none"\ntype = "none"', 'id = "nothing"\ntype = "none"'),
     "offer: the catalog must contain the 'none' offer (what a customer gets when nothing is offered)"),
])
def test_each_catalog_rule_is_refused_naming_the_field(tmp_path, text, line):
    assert _catalog_refused(tmp_path, text) == [line]


def test_an_offer_that_is_not_a_table_is_refused(tmp_path):
    assert _catalog_refused(tmp_path, 'version = "test-1"\noffer = [1]\n') == [
        "offer #1 (?): must be a table",
        "offer: the catalog must contain the 'none' offer (what a customer gets when nothing is offered)"]


def test_every_problem_of_a_catalog_is_reported_in_one_run(tmp_path):
    text = CATALOG_TEXT.replace('id = "none"\ntype = "none"', 'id = "nothing"\ntype = "none"').replace(
        "months = 1", "months = 7").replace("percent = 30", 'percent = "30"') + (
        '\n[[offer]]\nid = "pause_1m"\ntype = "credit"\ncredits = 2\n')
    assert _catalog_refused(tmp_path, text) == [
        "offer #2 (pause_1m): months: a pause lasts 1, 2 or 3 months, got 7",
        'offer #3 (discount_30_3m): percent: must be a number, got "30"',
        "offer #4 (pause_1m): id: duplicate: offer #2 has the id 'pause_1m' too",
        "offer: the catalog must contain the 'none' offer (what a customer gets when nothing is offered)",
    ]


def test_a_catalog_that_cannot_be_read_is_one_clear_error(tmp_path):
    assert _catalog_refused(tmp_path, 'version = "x\n')[0].startswith("not valid TOML: ")
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(CatalogError) as info:
        load_catalog(missing)
    assert info.value.lines == (f"{missing}: cannot read the offer catalog: No such file or directory",)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('version = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(CatalogError, match="not UTF-8 text"):
        load_catalog(latin1)


# --------------------------------------------------------------------------------------------- the policy

REASON_LINES = """too_expensive = ["discount_30_3m"]
not_using = ["pause_1m"]
temporary = ["pause_2m"]
technical = ["followup"]
content = ["credit_1"]
switching = []
other = []
"""


def _policy(top: str = "", guardrails: str = "", default: str = REASON_LINES, tables: str = "") -> str:
    return f"{top}\n[guardrails]\n{guardrails}\n[fallback.default]\n{default}\n{tables}\n"


def _policy_refused(tmp_path: Path, text: str) -> list[str]:
    return _refused(PolicyError, lambda p: load_policy(CATALOG, p), tmp_path / "policy.toml", text)


def test_a_minimal_policy_loads_with_the_defaults(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(_policy())
    config = load_policy(CATALOG, path)
    assert (config.time_budget_ms, config.close_the_loop_hours, config.guardrails.max_offers_per_year) == (150, 48, 3)
    assert config.fallback_offers("promoter", "content") == ("credit_1",)


@pytest.mark.parametrize("text, line", [
    (_policy(top="time_budget_ms = 0"), "time_budget_ms: must be > 0, got 0.0"),
    (_policy(top='time_budget_ms = "150"'), 'time_budget_ms: must be a number, got "150"'),
    (_policy(top="time_budget_ms = true"), "time_budget_ms: must be a number, got true"),
    (_policy(top="close_the_loop_hours = -2"), "close_the_loop_hours: must be > 0, got -2.0"),
    (_policy(top='close_the_loop_hours = "48"'), 'close_the_loop_hours: must be a number, got "48"'),
    (_policy(top="surprise = 1"), "surprise: unknown key"),
    (_policy(guardrails="max_offers_per_year = -1"), "[guardrails]: max_offers_per_year: must be >= 0, got -1"),
    (_policy(guardrails="pause_once_per_days = true"), "[guardrails]: pause_once_per_days: must be an integer, got true"),
    (_policy(guardrails="days_per_month = 30.5"), "[guardrails]: days_per_month: must be an integer, got 30.5"),
    (_policy(guardrails='discount_cooldown_days = "90"'), '[guardrails]: discount_cooldown_days: must be an integer, got "90"'),
    (_policy(guardrails="pause_once_a_year = true"), "[guardrails]: pause_once_a_year: unknown key"),
    ("time_budget_ms = 150\n", "fallback: required: [fallback.default] with the offers for every reason"),
    (_policy(default=REASON_LINES.replace("other = []\n", "")),
     "[fallback.default]: other: missing: the default table must list every reason"),
    (_policy(default=REASON_LINES + "bored = []\n"),
     "[fallback.default]: bored: not a cancel reason; the reasons are ['too_expensive', 'not_using', 'temporary', "
     "'technical', 'content', 'switching', 'other']"),
    (_policy(default=REASON_LINES.replace('["credit_1"]', '["credit_99"]')),
     "[fallback.default]: content: offers ['credit_99'] are not in the catalog"),
    (_policy(default=REASON_LINES.replace('["followup"]', '"followup"')),
     '[fallback.default]: technical: must be an array of strings, got "followup"'),
    (_policy(tables='[fallback.detractor]\nother = ["followup", "pause_9m"]'),
     "[fallback.detractor]: other: offers ['pause_9m'] are not in the catalog"),
    (_policy(tables='[fallback.detractor]\nbored = ["followup"]'),
     "[fallback.detractor]: bored: not a cancel reason; the reasons are ['too_expensive', 'not_using', 'temporary', "
     "'technical', 'content', 'switching', 'other']"),
    (_policy(tables='[fallback.fans]\nother = ["followup"]'),
     "[fallback.fans]: not an NPS segment; the tables are ['default', 'detractor', 'passive', 'promoter', 'none']"),
])
def test_each_policy_rule_is_refused_naming_the_table_and_the_key(tmp_path, text, line):
    assert _policy_refused(tmp_path, text) == [line]


def test_every_problem_of_a_policy_is_reported_in_one_run(tmp_path):
    text = _policy(top="time_budget_ms = -5", guardrails="max_offers_per_year = 2.5",
                   default=REASON_LINES.replace("switching = []\n", ""),
                   tables='[fallback.promoter]\ncontent = ["credit_99"]')
    assert _policy_refused(tmp_path, text) == [
        "time_budget_ms: must be > 0, got -5.0",
        "[guardrails]: max_offers_per_year: must be an integer, got 2.5",
        "[fallback.default]: switching: missing: the default table must list every reason",
        "[fallback.promoter]: content: offers ['credit_99'] are not in the catalog",
    ]


# --------------------------------------------------------------------------------------------- experiments

EXPERIMENT, OTHER = THREE_ARMS, SECOND  # tests/samples.py


def _experiments_refused(tmp_path: Path, text: str) -> list[str]:
    return _refused(ExperimentError, lambda p: load_experiments(CATALOG, p), tmp_path / "experiments.toml", text)


def _with(old: str, new: str, text: str = EXPERIMENT) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize("text, line", [
    (_with('name = "three-arms"', 'name = "three arms"'),
     "experiment 1 (three arms): name: must be 1-64 letters, digits, '-' or '_', got 'three arms'"),
    (_with('name = "three-arms"', f'name = "{"x" * 65}"'),
     f"experiment 1 ({'x' * 65}): name: must be 1-64 letters, digits, '-' or '_', got '{'x' * 65}'"),
    (_with('name = "three-arms"\n', ""), "experiment 1 (?): name: required"),
    (_with('name = "three-arms"', 'name = "three-arms"\nsalt = 1'), "experiment 1 (three-arms): salt: must be a string, got 1"),
    (_with("slice = [0.0, 0.5]", "slice = [0.5, 0.2]"),
     "experiment 1 (three-arms): slice: must be [start, end] with 0 <= start < end <= 1, got [0.5, 0.2]"),
    (_with("slice = [0.0, 0.5]", "slice = [0.0, 1.5]"),
     "experiment 1 (three-arms): slice: must be [start, end] with 0 <= start < end <= 1, got [0.0, 1.5]"),
    (_with("slice = [0.0, 0.5]", 'slice = "half"'),
     'experiment 1 (three-arms): slice: must be [start, end] with 0 <= start < end <= 1, got "half"'),
    (_with("holdout = 0.05", "holdout = 1.0"), "experiment 1 (three-arms): holdout: must be a share in [0, 1), got 1.0"),
    (_with("holdout = 0.05", "holdout = -0.1"), "experiment 1 (three-arms): holdout: must be a share in [0, 1), got -0.1"),
    (_with("holdout = 0.05", 'holdout = "0.05"'), 'experiment 1 (three-arms): holdout: must be a number, got "0.05"'),
    (_with("weight = 2", "weight = 0"), "experiment 1 (three-arms): variant 1 (model): weight: must be > 0, got 0.0"),
    (_with("weight = 2", "weight = true"), "experiment 1 (three-arms): variant 1 (model): weight: must be a number, got true"),
    (_with('kind = "model", weight = 2', 'kind = "champion"'),
     "experiment 1 (three-arms): variant 1 (model): kind: must be one of offer, model, rules, none, got 'champion'"),
    (_with('name = "model", kind = "model"', 'kind = "model"'),
     "experiment 1 (three-arms): variant 1 (?): name: required"),
    (_with('kind = "model", weight = 2', 'kind = "model", offer = "pause_1m"'),
     "experiment 1 (three-arms): variant 1 (model): offer: only kind 'offer' takes an offer"),
    (_with(', offer = "pause_2m"', ""),
     "experiment 1 (three-arms): variant 2 (pause): offer: required for kind 'offer': the catalog offer this arm makes"),
    (_with('offer = "pause_2m"', 'offer = "none"'),
     "experiment 1 (three-arms): variant 2 (pause): offer: 'none' is not an offer of the catalog (kind 'none' gives "
     "no offer)"),
    (_with('offer = "pause_2m"', 'offer = "pause_9m"'),
     "experiment 1 (three-arms): variant 2 (pause): offer: 'pause_9m' is not an offer of the catalog (kind 'none' "
     "gives no offer)"),
    (_with('offer = "pause_2m" }', 'offer = "pause_2m", colour = "red" }'),
     "experiment 1 (three-arms): variant 2 (pause): colour: unknown key"),
    (_with('name = "discount"', 'name = "pause"'),
     "experiment 1 (three-arms): variant 3 (pause): name: duplicate: variant 2 has the name 'pause' too"),
    (_with('name = "discount"', 'name = "holdout"'),
     "experiment 1 (three-arms): variant 3 (holdout): name: 'holdout' names the holdout arm; call the variant "
     "something else"),
    (_with('variants = [\n  { name = "model", kind = "model", weight = 2 },',
           'variants = [\n  "model",'), "experiment 1 (three-arms): variant 1 (?): must be a table"),
    (_with('variants = [{ name = "rules", kind = "rules" }, { name = "nothing", kind = "none" }]',
           'variants = [{ name = "rules", kind = "rules" }]', OTHER),
     "experiment 1 (other-half): variants: needs at least two arms: two variants, or one variant and a holdout"),
    (_with('variants = [{ name = "rules", kind = "rules" }, { name = "nothing", kind = "none" }]',
           'variants = { name = "rules", kind = "rules" }', OTHER),
     'experiment 1 (other-half): variants: must be an array of tables, e.g. variants = [{ name = "model", '
     'kind = "model" }, ...]'),
    (_with('control = "model"', 'control = "champion"'),
     "experiment 1 (three-arms): control: 'champion' is not one of its variants ['model', 'pause', 'discount'] "
     "(nor 'holdout')"),
    (_with('variants =', 'control = "holdout"\nvariants =', OTHER),
     "experiment 1 (other-half): control: 'holdout' gets no customers: holdout is 0 (give a holdout share, or name "
     "one of its variants ['rules', 'nothing'])"),
    (_with("start = 2026-12-01T00:00:00Z\n", ""), "experiment 1 (three-arms): start: required"),
    (_with("start = 2026-12-01T00:00:00Z", "start = 2026-12-01T00:00:00"),
     "experiment 1 (three-arms): start: must be a date-time with a time zone, e.g. 2026-12-01T00:00:00Z, got "
     "2026-12-01T00:00:00"),
    (_with("start = 2026-12-01T00:00:00Z", "start = 2026-12-01"),
     "experiment 1 (three-arms): start: must be a date-time with a time zone, e.g. 2026-12-01T00:00:00Z, got "
     "2026-12-01"),
    (_with("start = 2026-12-01T00:00:00Z", 'start = "2026-12-01T00:00:00Z"'),
     'experiment 1 (three-arms): start: must be a date-time with a time zone, e.g. 2026-12-01T00:00:00Z, got '
     '"2026-12-01T00:00:00Z"'),
    (_with("start = 2026-12-01T00:00:00Z", "start = 2026-12-01T00:00:00Z\nstop = 2026-12-01T00:00:00+00:00"),
     "experiment 1 (three-arms): stop: must be after start (2026-12-01T00:00:00+00:00)"),
    (_with("start = 2026-12-01T00:00:00Z", "start = 2026-12-01T00:00:00Z\nstop = 2027-01-01T00:00:00"),
     "experiment 1 (three-arms): stop: must be a date-time with a time zone, e.g. 2026-12-01T00:00:00Z, got "
     "2027-01-01T00:00:00"),
    (_with('control = "model"', 'control = "model"\nprimary_metric = "happiness"'),
     "experiment 1 (three-arms): primary_metric: must be one of retained_30, retained_90, accepted, net_revenue_90, "
     "got 'happiness'"),
    (_with('control = "model"', 'control = "model"\nguardrail_metrics = ["retained_30", "happiness"]'),
     "experiment 1 (three-arms): guardrail_metrics: unknown value(s) ['happiness']; use some of ['retained_30', "
     "'retained_90', 'accepted', 'net_revenue_90']"),
    (_with('control = "model"', 'control = "model"\npopulation = { reasons = ["bored"] }'),
     "experiment 1 (three-arms): population.reasons: unknown value(s) ['bored']; use some of ['too_expensive', "
     "'not_using', 'temporary', 'technical', 'content', 'switching', 'other']"),
    (_with('control = "model"', 'control = "model"\npopulation = { nps_segments = ["fans"] }'),
     "experiment 1 (three-arms): population.nps_segments: unknown value(s) ['fans']; use some of ['promoter', "
     "'passive', 'detractor', 'none']"),
    (_with('control = "model"', 'control = "model"\npopulation = { channels = ["fax"] }'),
     "experiment 1 (three-arms): population.channels: unknown value(s) ['fax']; use some of ['web', 'ios', "
     "'android', 'partner']"),
    (_with('control = "model"', 'control = "model"\npopulation = { plans = "plus_monthly" }'),
     'experiment 1 (three-arms): population.plans: must be an array of strings, got "plus_monthly"'),
    (_with('control = "model"', 'control = "model"\npopulation = { countries = ["FR"] }'),
     "experiment 1 (three-arms): population.countries: unknown key"),
    (_with('control = "model"', 'control = "model"\npopulation = "everyone"'),
     "experiment 1 (three-arms): population: must be a table"),
    (_with('control = "model"', 'control = "model"\ncolour = "red"'), "experiment 1 (three-arms): colour: unknown key"),
    ('experiment = "three-arms"\n', "experiment: must be an array of tables, e.g. [[experiment]]"),
    ('owner = "me"\n' + EXPERIMENT, "owner: unknown key; experiments are [[experiment]] tables"),
    (EXPERIMENT + _with("[0.0, 0.5]", "[0.6, 0.7]"),
     "experiment 2 (three-arms): name: duplicate: experiment 1 has the name 'three-arms' too"),
    (EXPERIMENT + _with("[0.5, 1.0]", "[0.4, 1.0]", OTHER),
     "experiment 2 (other-half): slice: overlapping traffic slices: [0.4, 1.0] here and [0.0, 0.5] in experiment 1 "
     "(three-arms), which runs at the same time"),
])
def test_each_experiment_rule_is_refused_naming_the_experiment_and_the_field(tmp_path, text, line):
    assert _experiments_refused(tmp_path, text) == [line]


def test_experiments_one_after_the_other_may_share_a_slice(tmp_path):
    path = tmp_path / "experiments.toml"
    first = _with("start = 2026-12-01T00:00:00Z", "start = 2026-12-01T00:00:00Z\nstop = 2027-01-01T00:00:00Z")
    path.write_text(first + _with("2026-12-01", "2027-01-01", _with('"three-arms"', '"later"')))
    assert [e.name for e in load_experiments(CATALOG, path).experiments] == ["three-arms", "later"]


def test_every_problem_of_an_experiments_file_is_reported_in_one_run(tmp_path):
    # Overlapping slices used to go unreported whenever an experiment had another error: the first stopped the check.
    text = (_with("holdout = 0.05", "holdout = 2") + _with("[0.5, 1.0]", "[0.25, 1.0]", OTHER)
            + _with("[0.5, 1.0]", "[0.9, 1.0]", _with('"other-half"', '"other-half"', OTHER)))
    assert _experiments_refused(tmp_path, text) == [
        "experiment 1 (three-arms): holdout: must be a share in [0, 1), got 2.0",
        "experiment 2 (other-half): slice: overlapping traffic slices: [0.25, 1.0] here and [0.0, 0.5] in "
        "experiment 1 (three-arms), which runs at the same time",
        "experiment 3 (other-half): name: duplicate: experiment 2 has the name 'other-half' too",
        "experiment 3 (other-half): slice: overlapping traffic slices: [0.9, 1.0] here and [0.25, 1.0] in "
        "experiment 2 (other-half), which runs at the same time",
    ]


def test_an_overlap_names_the_other_experiment_even_when_its_name_is_refused(tmp_path):
    text = _with('name = "three-arms"', 'name = "three arms"') + _with("[0.5, 1.0]", "[0.4, 1.0]", OTHER)
    assert _experiments_refused(tmp_path, text)[1] == (
        "experiment 2 (other-half): slice: overlapping traffic slices: [0.4, 1.0] here and [0.0, 0.5] in "
        "experiment 1 (three arms), which runs at the same time")


def test_a_missing_experiments_file_means_no_experiments_and_bad_toml_is_one_error(tmp_path):
    book = load_experiments(CATALOG, tmp_path / "nowhere.toml")
    assert book.experiments == () and book.version == "none"
    (line,) = _experiments_refused(tmp_path, "[[experiment]\nname = 'x'\n")
    assert line.startswith("not valid TOML: ")


# --------------------------------------------------------------------------------------------- the CLI


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_retention_offers_on_a_bad_catalog_exits_2_with_every_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(CATALOG_TEXT.replace("percent = 30", 'percent = "50"').replace("months = 1", "months = 9"))
    result = _cli("offers", "--catalog", bad)
    assert result.exit_code == 2
    assert result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        f"error: {bad}: offer #2 (pause_1m): months: a pause lasts 1, 2 or 3 months, got 9",
        f'error: {bad}: offer #3 (discount_30_3m): percent: must be a number, got "50"',
    ]


def test_retention_experiment_check_on_a_bad_file_exits_2_with_every_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(_with('control = "model"', 'control = "champion"') + _with("[0.5, 1.0]", "[0.4, 1.0]", OTHER))
    result = _cli("experiment", "check", "--file", bad, "--catalog", ROOT / "config" / "offers.toml")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        f"error: {bad}: experiment 1 (three-arms): control: 'champion' is not one of its variants ['model', 'pause', "
        "'discount'] (nor 'holdout')",
        f"error: {bad}: experiment 2 (other-half): slice: overlapping traffic slices: [0.4, 1.0] here and [0.0, 0.5] in "
        "experiment 1 (three-arms), which runs at the same time",
    ]
    good = _cli("experiment", "check", "--file", ROOT / "config" / "experiments.example.toml")
    assert good.exit_code == 0 and "1 experiment(s), version aecef65c7e" in good.output


# Four independent problems, two of them across experiments: a name, an overlap with the experiment of that name,
# a duplicate name and a control that can get no customer (which `experiment report` once met as a KeyError).
SEVERAL_PROBLEMS = (_with('name = "three-arms"', 'name = "three arms"')
                    + _with("[0.5, 1.0]", "[0.4, 0.9]", OTHER)
                    + _with("[0.5, 1.0]", "[0.9, 1.0]", _with("variants =", 'control = "holdout"\nvariants =', OTHER)))


def _several_problems_lines(path: Path) -> list[str]:
    return [
        f"{path}: experiment 1 (three arms): name: must be 1-64 letters, digits, '-' or '_', got 'three arms'",
        f"{path}: experiment 2 (other-half): slice: overlapping traffic slices: [0.4, 0.9] here and [0.0, 0.5] in "
        "experiment 1 (three arms), which runs at the same time",
        f"{path}: experiment 3 (other-half): name: duplicate: experiment 2 has the name 'other-half' too",
        f"{path}: experiment 3 (other-half): control: 'holdout' gets no customers: holdout is 0 (give a holdout share, "
        "or name one of its variants ['rules', 'nothing'])",
    ]


def test_experiment_check_reports_every_independent_problem_in_one_run_and_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SEVERAL_PROBLEMS)
    result = _cli("experiment", "check", "--file", bad, "--catalog", ROOT / "config" / "offers.toml")
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.splitlines() == [f"error: {line}" for line in _several_problems_lines(bad)]


# --------------------------------------------------------------------------------------------- the service



def test_the_service_refuses_to_start_with_every_problem_of_the_experiments_file(tmp_path, capfd):
    from service import CONFIG_INVALID_EXIT, create_app

    bad = tmp_path / "experiments.toml"
    bad.write_text(SEVERAL_PROBLEMS)
    config = {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "MODELS_DIR": str(tmp_path),
              "SPOOL_PATH": str(tmp_path / "spool.db"), "EXPERIMENTS_PATH": str(bad)}
    with pytest.raises(SystemExit) as stop:
        create_app(config)
    assert stop.value.code == CONFIG_INVALID_EXIT
    (entry,) = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"config_invalid"' in line]
    assert entry["level"] == "critical" and entry["errors"] == _several_problems_lines(bad)


@pytest.mark.slow
def test_gunicorn_stops_on_a_bad_catalog_with_the_errors_and_no_traceback(tmp_path):
    bad = tmp_path / "offers.toml"
    bad.write_text(CATALOG_TEXT.replace("percent = 30", 'percent = "50"').replace('id = "none"', 'id = "nothing"'))
    (tmp_path / "prom").mkdir()
    env = {**os.environ, "RETENTION_CATALOG": str(bad), "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "RETENTION_MODELS_DIR": str(tmp_path / "models"), "PORT": str(free_port()), "WEB_CONCURRENCY": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "RETENTION_SPOOL": str(tmp_path / "spool.db")}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "service:create_app()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    (entry,) = [json.loads(line) for line in done.stderr.splitlines() if '"config_invalid"' in line]
    assert entry["level"] == "critical" and entry["errors"] == [
        f'{bad}: offer #3 (discount_30_3m): percent: must be a number, got "50"',
        f"{bad}: offer: the catalog must contain the 'none' offer (what a customer gets when nothing is offered)",
    ]
