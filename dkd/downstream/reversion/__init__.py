"""ReVersion's relation inversion (Huang et al., 2023) against the teacher, the learned token then used by
the one-step student and by the teacher (paper 4.3 and F.2, Figs. 6 and 23).

* :mod:`.inversion`: the inversion itself: the trainable token, the denoising and steering losses,
  relation-focal timestep sampling;
* :mod:`.relations`: a relation's exemplars, the prompt templates and the learned token put into a
  sampler's text encoder;
* :mod:`.summary`: the ``reversion`` target's summary (grids, times, the time saving).
"""
