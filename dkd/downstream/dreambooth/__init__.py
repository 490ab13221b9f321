"""DreamBooth with LoRaD, LoRA or full fine-tuning on the teacher and on the one-step student (paper F.2,
Figs. 7 and 24).

* :mod:`.method`: the pure parts: the config (the paper's settings per method), the prior-preservation
  loss, the adapters and the instance images;
* :mod:`.data`: the subjects, their photos and the evaluation prompts;
* :mod:`.train`: training on the project's checkpointed trainer, and an arm's export;
* :mod:`.evaluate`: the arms sampled and scored (DINO, CLIP-I, CLIP-T), the summary's table and grids.
"""
