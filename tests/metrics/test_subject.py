"""DreamBooth's subject-fidelity metrics (DINO, CLIP-I, CLIP-T) on tiny random transformers models built in
code: 1 for identical images, below 1 for different ones, and equal to float64 hand computations of the
cosines from the models' own towers (ViT CLS token; CLIP vision/text towers and projections); the batched
image loop they share with the COCO CLIP score; the tiny stand-ins the tiny configuration builds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from dkd.backbones.tiny import CLIP_VOCAB_SIZE, write_clip_tokenizer
from dkd.metrics.clip import batched_image_features
from dkd.metrics.subject import (
    clip_image_similarity,
    clip_text_cosines,
    clip_text_similarity,
    dino_similarity,
    load_dino,
    load_subject_clip,
    mean_pairwise_cosine,
    save_tiny_subject_models,
)


@pytest.fixture(scope="module")
def dino():
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=16
    )
    return ViTModel(config, add_pooling_layer=False).eval(), ViTImageProcessor(size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(1)
    config = CLIPConfig(
        text_config={"vocab_size": CLIP_VOCAB_SIZE, "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )  # fmt: skip
    tokenizer = write_clip_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(config).eval(), CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def _image(seed: int, size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _hand_mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over all pairs of ``a_i . b_j / (|a_i| |b_j|)``, one pair at a time in float64."""
    values = []
    for u in a.astype(np.float64):
        for v in b.astype(np.float64):
            values.append(float(u @ v) / math.sqrt(float(u @ u) * float(v @ v)))
    return sum(values) / len(values)


def _pixels(processor, image: Image.Image) -> torch.Tensor:
    return processor(images=[image], return_tensors="pt")["pixel_values"]


def test_mean_pairwise_cosine_is_the_mean_over_all_pairs():
    a = np.array([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]])
    b = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, -2.0], [1.0, 1.0, 1.0]])
    assert mean_pairwise_cosine(torch.tensor(a), torch.tensor(b)) == pytest.approx(_hand_mean_cosine(a, b), abs=1e-15)
    assert mean_pairwise_cosine(torch.tensor(a[:1]), torch.tensor(a[:1] * 7)) == pytest.approx(1.0, abs=1e-15)
    for bad in ((torch.zeros(0, 3), torch.ones(2, 3)), (torch.ones(2, 3), torch.ones(2, 4)), (torch.ones(3), b)):
        with pytest.raises(ValueError, match="feature sets"):
            mean_pairwise_cosine(*(torch.as_tensor(x) for x in bad))


def test_dino_is_one_for_identical_images_and_below_for_different(dino, tmp_path):
    model, processor = dino
    path = tmp_path / "real.png"
    _image(0).save(path)
    same = dino_similarity([_image(0), _image(0)], [path], model=model, processor=processor)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert dino_similarity([_image(1)], [path], model=model, processor=processor) < 1 - 1e-4


def test_dino_equals_the_mean_cosine_of_cls_tokens(dino):
    model, processor = dino
    generated, real = [_image(s) for s in (1, 2, 3)], [_image(s, size=(40, 40)) for s in (4, 5)]

    def cls(image):
        with torch.no_grad():
            return model(pixel_values=_pixels(processor, image)).last_hidden_state[0, 0].double().numpy()

    expected = _hand_mean_cosine(np.stack([cls(i) for i in generated]), np.stack([cls(i) for i in real]))
    for batch_size in (1, 2, 32):
        got = dino_similarity(generated, real, model=model, processor=processor, batch_size=batch_size)
        assert got == pytest.approx(expected, abs=1e-6)


def test_clip_image_similarity_is_one_for_identical_images_and_the_hand_cosine(clip):
    model, processor = clip
    assert clip_image_similarity([_image(0)], [_image(0)], model=model, processor=processor) == pytest.approx(1.0)
    generated, real = [_image(s) for s in (1, 2)], [_image(s) for s in (3, 4, 5)]

    def embedding(image):
        with torch.no_grad():
            pooled = model.vision_model(pixel_values=_pixels(processor, image)).pooler_output
            return model.visual_projection(pooled)[0].double().numpy()

    expected = _hand_mean_cosine(np.stack([embedding(i) for i in generated]), np.stack([embedding(i) for i in real]))
    assert expected < 1 - 1e-4
    got = clip_image_similarity(generated, real, model=model, processor=processor, batch_size=2)
    assert got == pytest.approx(expected, abs=1e-6)


def test_clip_text_similarity_equals_the_hand_cosine(clip):
    model, processor = clip
    images = [_image(s) for s in (6, 7, 8)]
    prompts = ["a photo of a dog", "a dog wearing a red hat on the beach at sunset", "a backpack"]
    expected = []
    for image, prompt in zip(images, prompts):
        ids = processor.tokenizer([prompt], return_tensors="pt")["input_ids"]  # unpadded: ends at end-of-text
        assert ids[0, -1] == processor.tokenizer.eos_token_id
        with torch.no_grad():
            text = model.text_projection(model.text_model(input_ids=ids).pooler_output)[0].double().numpy()
            pooled = model.vision_model(pixel_values=_pixels(processor, image)).pooler_output
            picture = model.visual_projection(pooled)[0].double().numpy()
        expected.append(_hand_mean_cosine(picture[None], text[None]))
    cosines = clip_text_cosines(images, prompts, model=model, processor=processor)
    np.testing.assert_allclose(cosines, expected, atol=1e-6)
    assert len(set(np.round(cosines, 6))) == 3  # the prompts and images are told apart
    mean = clip_text_similarity(images, prompts, model=model, processor=processor, batch_size=2)
    assert mean == pytest.approx(float(np.mean(expected)), abs=1e-6)


def test_bad_input_is_refused(dino, clip):
    model, processor = clip
    with pytest.raises(ValueError, match="non-empty sequence of images"):
        dino_similarity([], [_image(0)], model=dino[0], processor=dino[1])
    with pytest.raises(ValueError, match="batch_size"):
        clip_image_similarity([_image(0)], [_image(0)], model=model, processor=processor, batch_size=0)
    with pytest.raises(ValueError, match="one caption per image"):
        clip_text_similarity([_image(0)], ["a", "b"], model=model, processor=processor)
    with pytest.raises(ValueError, match="CLIPProcessor"):
        clip_text_similarity([_image(0)], ["a"], model=model, processor=processor.image_processor)


def test_loaders_read_local_folders_offline(dino, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images = [_image(1)], [_image(2), _image(3)]
    for (model, processor), load, metric in ((dino, load_dino, dino_similarity),
                                             (clip, load_subject_clip, clip_image_similarity)):  # fmt: skip
        folder = tmp_path / type(model).__name__
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        loaded, loaded_processor = load(str(folder), device="cpu")
        assert not loaded.training and type(loaded) is type(model)
        expected = metric(*images, model=model, processor=processor)
        assert metric(*images, model=loaded, processor=loaded_processor) == pytest.approx(expected, abs=1e-6)


class _Mean(torch.nn.Module):
    """An encoder whose feature of an image is its per-channel mean times a weight; records its calls."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(2.0))
        self.batches = []

    def forward(self, pixels):
        self.batches.append(len(pixels))
        return pixels.mean(dim=(2, 3)) * self.weight


def test_batched_image_features_is_the_shared_no_grad_loop(tmp_path):
    """The loop of DINO / CLIP-I and of the COCO CLIP score (dkd.metrics.clip): every image once, in batches,
    files and PIL images alike, float32 on the CPU, no graph, the model put in eval mode."""
    model = _Mean().train()
    images = [_image(s, size=(4, 4)) for s in range(5)]
    images[2].save(tmp_path / "two.png")
    mixed = images[:2] + [tmp_path / "two.png"] + images[3:]

    def pixels(rgb):
        return torch.stack([torch.from_numpy(np.asarray(image, dtype=np.float64)).permute(2, 0, 1) for image in rgb])

    features = batched_image_features(mixed, model, pixels, model=model, batch_size=2)
    expected = np.stack([np.asarray(image, dtype=np.float64).mean(axis=(0, 1)) * 2 for image in images])
    assert model.batches == [2, 2, 1] and not model.training
    assert features.dtype == torch.float32 and features.device.type == "cpu" and not features.requires_grad
    np.testing.assert_allclose(features.numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        batched_image_features(images, model, pixels, model=model, batch_size=0)


def test_tiny_subject_models_load_through_the_loaders(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folders = save_tiny_subject_models(tmp_path, seed=3)
    dino, dino_processor = load_dino(folders["dino"], device="cpu")
    clip, clip_processor = load_subject_clip(folders["clip"], device="cpu")
    images = [_image(s) for s in (1, 2)]
    assert dino_similarity(images[:1], images[:1], model=dino, processor=dino_processor) == pytest.approx(1.0)
    assert clip_image_similarity(images[:1], images[1:], model=clip, processor=clip_processor) < 1 - 1e-4
    cosine = clip_text_similarity(images, ["a toy", "a red toy"], model=clip, processor=clip_processor)
    assert -1 <= cosine <= 1
    again = save_tiny_subject_models(tmp_path / "again", seed=3)  # seeded: the same weights
    assert (tmp_path / "dino" / "model.safetensors").read_bytes() == (
        tmp_path / "again" / "dino" / "model.safetensors"
    ).read_bytes()
    assert again.keys() == {"dino", "clip"}
