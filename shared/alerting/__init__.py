"""Alert rules as domain code: the rule schema, its evaluation (no I/O), limits from each
device, the built-in rule set, backtests and offline replay, and the alerts' database
side (rules, open alerts and their lifecycle)."""
