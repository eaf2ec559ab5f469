"""How inboxcheck runs: settings, the arq worker, the producer client, events and the CLI."""
