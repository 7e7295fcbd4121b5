"""Where a request goes: the route table, conditions, the request view and its user-agent and geo lookups."""
