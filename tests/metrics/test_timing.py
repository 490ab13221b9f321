"""Inference timing (Table 5) with a fake clock, and on tiny one-step / diffusers pipelines."""

from __future__ import annotations

import math
import time

import pytest
import torch
from PIL import Image

from dkd.backbones.tiny import save_tiny_backbone
from dkd.metrics.timing import cpu_name, text_to_image, time_call, time_pipeline
from dkd.sampling import DiffusersSampler, MultiStepSpec, OneStepPipeline


class FakeClock:
    """``time.perf_counter`` replacement returning ``readings`` in order; logs every event."""

    def __init__(self, readings, events):
        self.readings, self.events = list(readings), events

    def __call__(self):
        self.events.append("clock")
        return self.readings.pop(0)


def test_time_call_summary_is_the_closed_form_of_the_fake_clock(monkeypatch):
    durations = [1.0, 2.0, 3.5, 0.5, 4.0]
    readings, now = [], 100.0
    for d in durations:  # each call: a start reading, an end reading d later, then some idle time
        readings += [now, now + d]
        now += d + 7.0
    events = []
    monkeypatch.setattr(time, "perf_counter", FakeClock(readings, events))
    result = time_call(lambda: events.append("call"), warmup=3, repeats=5, device="cpu")
    assert result["median_s"] == 2.0 and result["min_s"] == 0.5
    assert result["mean_s"] == pytest.approx(11.0 / 5)
    sample_var = sum((d - 2.2) ** 2 for d in durations) / 4  # = 9.3 / 4
    assert result["std_s"] == pytest.approx(math.sqrt(9.3 / 4)) == pytest.approx(math.sqrt(sample_var))
    assert result["times_s"] == pytest.approx(durations)
    assert (result["repeats"], result["warmup"], result["device_type"]) == (5, 3, "cpu")
    assert result["torch"] == torch.__version__ and result["device"] == cpu_name()
    # three untimed warm-up calls, then each timed call between its own two clock readings
    assert events == ["call"] * 3 + ["clock", "call", "clock"] * 5


def test_time_call_rejects_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_call(lambda: None, warmup=-1)
    with pytest.raises(TypeError, match="callable"):
        time_call(42)
    single = time_call(lambda: None, warmup=0, repeats=1, device="cpu")
    assert single["std_s"] == 0.0 and single["repeats"] == 1


def test_cpu_name_is_the_proc_cpuinfo_model(monkeypatch, tmp_path):
    import dkd.metrics.timing as timing

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 3.00GHz\nflags\t: a b\n")
    monkeypatch.setattr(timing, "Path", lambda _: fake)
    assert cpu_name() == "Example CPU @ 3.00GHz"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=3)


def test_one_step_pipeline_call_is_timed_end_to_end(folder, monkeypatch):
    pipe = OneStepPipeline.from_pretrained(folder, backbone="tiny-sd")
    calls = []
    original = pipe.teacher.decode
    monkeypatch.setattr(pipe.teacher, "decode", lambda latents: calls.append(latents.shape) or original(latents))
    result = time_pipeline(pipe, "a handwritten digit 3", seed=5, warmup=2, repeats=3)
    assert calls == [(1, 4, 8, 8)] * 5  # batch 1, VAE decode in every call: 2 warm-up + 3 timed
    assert result["repeats"] == 3 and result["warmup"] == 2 and result["device_type"] == "cpu"
    assert 0 < result["min_s"] <= result["median_s"] and result["mean_s"] > 0
    assert result["pipeline"] == "OneStepPipeline" and result["image_size"] == [16, 16]
    image = text_to_image(pipe, "a handwritten digit 3", seed=5)()
    assert isinstance(image, Image.Image) and image.tobytes() == pipe(["a handwritten digit 3"], [5])[0].tobytes()


def test_diffusers_pipeline_and_sampler_calls(folder):
    sampler = DiffusersSampler(MultiStepSpec(source=str(folder), steps=2, guidance_scale=3.0))
    steps = []
    sampler.pipe.scheduler.step = _counting(sampler.pipe.scheduler.step, steps)
    result = time_pipeline(sampler.pipe, "a digit", warmup=1, repeats=2, num_inference_steps=2, guidance_scale=3.0)
    assert len(steps) == 3 * 2  # (1 warm-up + 2 timed) x 2 steps
    assert result["pipeline"] == "StableDiffusionPipeline" and result["median_s"] > 0
    assert result["call_kwargs"] == {"num_inference_steps": 2, "guidance_scale": 3.0}
    wrapped = time_pipeline(sampler, "a digit", warmup=1, repeats=2)
    assert wrapped["pipeline"] == "DiffusersSampler" and wrapped["image_size"] == [16, 16]
    with pytest.raises(TypeError, match="one string"):
        time_pipeline(sampler, ["a", "b"])
    with pytest.raises(TypeError, match="not a PIL image"):
        time_pipeline(lambda prompts, seeds: [torch.zeros(3)], "a digit")


def _counting(fn, log):
    def wrapper(*args, **kwargs):
        log.append(1)
        return fn(*args, **kwargs)

    return wrapper
