"""The CLI's commands, one module per concern; each module's COMMANDS list is registered in
:mod:`mlayer.cli`. Command bodies import their library modules lazily (boto3 and friends
must not load for ``mlayer --help``)."""
