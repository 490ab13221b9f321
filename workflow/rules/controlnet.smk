# The controlnet target (config downstream.controlnet; docs/downstream.md). Helpers in downstream.smk.
