# The reversion target (config downstream.reversion; docs/downstream.md). Helpers in downstream.smk.
