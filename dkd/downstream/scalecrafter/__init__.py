"""ScaleCrafter (He et al., 2023) with the one-step student above its training resolution (paper 4.3,
Figs. 14 and 25: the SD1.5 student at 1024² and 2048²).

* :mod:`.redilation`: re-dilation of the U-Net's convolutions, FreeU and the one-step high-resolution
  generation;
* :mod:`.teacher`: the multi-step teacher as ScaleCrafter samples it (early steps re-dilated,
  noise-damped CFG);
* :mod:`.compare`: the ``scalecrafter`` workflow target's arms, their images and timing, the grid and
  the summary.
"""
