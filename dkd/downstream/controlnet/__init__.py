"""ControlNet on the one-step student (paper 4.3 and F.2, Figs. 5 and 22): a stock SD1.5 ControlNet with
the exported student (one call at its ``t_init``, no CFG) against the teacher (DDIM 50, CFG 7.5).

* :mod:`.pipeline`: the student in diffusers' ControlNet pipeline, the teacher's reference, the canny
  condition, edge F1 and per-part timing;
* :mod:`.run`: the ``controlnet`` workflow target: its settings, condition images, the tiny ControlNet,
  the image sets and their canny F1;
* :mod:`.summary`: the target's summary (tables and grids).
"""
