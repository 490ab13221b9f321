"""The one-step student dropped into existing methods (paper 4.3, F.2): ScaleCrafter's re-dilation for
high resolutions (:mod:`dkd.downstream.scalecrafter`), ControlNet (:mod:`dkd.downstream.controlnet`) and
ReVersion's relation inversion (:mod:`dkd.downstream.reversion`)."""
