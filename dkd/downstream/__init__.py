"""The one-step student dropped into existing methods (paper 4.3, F.2), one subpackage per method, each
the library of its workflow target (``docs/downstream.md``): ControlNet (:mod:`dkd.downstream.controlnet`),
DreamBooth with LoRaD (:mod:`dkd.downstream.dreambooth`), ScaleCrafter's re-dilation for high resolutions
(:mod:`dkd.downstream.scalecrafter`) and ReVersion's relation inversion (:mod:`dkd.downstream.reversion`).

The subpackages re-export nothing: import from their modules."""
