"""Seeded Stable Diffusion generation (text-to-image and image-to-image) through the engine.

Why: image re-synthesis must be reproducible like every other step: each row
(one image of one sample, one augmentation) carries its own seed and gets its
own ``torch.Generator``, so a generated image depends on (model, prompt,
source image, seed), not on batch composition. Rows are batched into one
pipeline call; a bad source image rejects only its sample.

Example::

    task = DiffusionTask(model_path=Path("models/sd"), seed=0, mode="img2img", prompts=..., aug_num=2)
    results = engine.run(task, samples)   # per sample: {(chunk, image, k): PIL image}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine.models import MODEL_LOADERS, ModelBundle
from bettersynth.engine.task import InferenceTask, Row, derive_seed

DiffusionMode = Literal["img2img", "txt2img"]


class DiffusionPipelines(torch.nn.Module):
    """Both Stable Diffusion pipelines over one set of weights, as a module the model cache can hold.

    The components are registered as submodules so ``eval()`` and device moves
    reach them; the pipelines themselves are plain attributes.
    """

    def __init__(self, txt2img: Any, img2img: Any):
        super().__init__()
        self.parts = torch.nn.ModuleDict({k: v for k, v in txt2img.components.items() if isinstance(v, torch.nn.Module)})
        self.pipelines = {"txt2img": txt2img, "img2img": img2img}


@MODEL_LOADERS.register("hf_diffusion")
def load_hf_diffusion(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """A ``StableDiffusionPipeline`` folder (``save_pretrained`` layout); img2img shares its weights."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    txt2img = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    txt2img.set_progress_bar_config(disable=True)
    img2img = StableDiffusionImg2ImgPipeline(**txt2img.components)
    img2img.set_progress_bar_config(disable=True)
    resolution = txt2img.unet.config.sample_size * txt2img.vae_scale_factor
    return ModelBundle(DiffusionPipelines(txt2img, img2img), None, {"resolution": resolution})


@dataclass
class DiffusionTask(InferenceTask):
    model_path: Path
    seed: int
    prompts: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (sample id, chunk, image) -> prompt
    mode: DiffusionMode = "img2img"
    aug_num: int = 1  # images generated per source image
    strength: float = 0.8  # img2img: how far from the source image (1 = ignore it)
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    resolution: int | None = None  # generated size; None: the pipeline's native size
    loader: str = "hf_diffusion"

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        rows = []
        for c, (_, images) in enumerate(sample.chunks()):
            for j, image in enumerate(images):
                prompt = self.prompts.get((sample.id, c, j))
                if prompt is None:
                    continue
                source = image if self.mode == "img2img" else None
                for k in range(self.aug_num):
                    rows.append(Row(sample_idx, (c, j, k), source, prompt, derive_seed(self.seed, sample.id, c, j, k)))
        return rows

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        size = self.resolution or info["resolution"]
        if image is None:
            return {"prompt": row.text, "image": None, "size": None}
        return {"prompt": row.text, "image": image.resize((size, size), Image.BILINEAR), "size": image.size}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        return {"items": prepared}

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[Image.Image]:
        items = inputs["items"]
        size = self.resolution or bundle.info["resolution"]
        device = next(bundle.model.parameters()).device
        generators = [torch.Generator(device=device).manual_seed(row.seed or 0) for row in rows]
        common = dict(prompt=[i["prompt"] for i in items], guidance_scale=self.guidance_scale,
                      num_inference_steps=self.num_inference_steps, generator=generators, output_type="pil")
        if self.mode == "img2img":
            images = bundle.model.pipelines["img2img"](image=[i["image"] for i in items], strength=self.strength, **common).images
            # Back to the source's size, as Data-Juicer does, so the sample's geometry is unchanged.
            return [out.resize(i["size"], Image.BILINEAR) if out.size != i["size"] else out for out, i in zip(images, items)]
        return list(bundle.model.pipelines["txt2img"](height=size, width=size, **common).images)
