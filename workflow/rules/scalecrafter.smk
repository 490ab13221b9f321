# The scalecrafter target (config downstream.scalecrafter; docs/downstream.md). Helpers in downstream.smk.
