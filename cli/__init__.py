"""The `retention` command line: one root group registering each area's commands (MLflow's layout).

Leaf modules (data, train, store, experiment, offers, followups, webhooks, ...) hold their commands in a
`commands` list, share what they have in common through cli.options, and never import this module or each other. Click lives in this
package only; everything a command does is a function of the layers below (retention, training, store,
reports), so it can be tested and reused without a terminal.

Exit codes: 0 success, 2 invalid input (with an `error: ...` line on stderr), 1 a bug.
"""

from __future__ import annotations

import click

from cli import atrisk, data, drift, experiment, followups, models, offers, store, train, webhooks


@click.group()
def main() -> None:
    """retention-offers: simulate and validate data, train and judge models, run the store, experiments."""


for _leaf in (data, train, models, drift, store, experiment, offers, followups, webhooks, atrisk):
    for _command in _leaf.commands:
        main.add_command(_command)
