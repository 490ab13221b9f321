# The dreambooth target (config downstream.dreambooth; docs/downstream.md). Helpers in downstream.smk.
