"""``os-agent serve``: the agent daemon's entry point."""
