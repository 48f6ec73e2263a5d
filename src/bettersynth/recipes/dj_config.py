"""Data-Juicer's global config keys: each one honoured, accepted without effect, or refused by name.

Why: a Data-Juicer user's recipe must run unchanged, and a key that would
change the result must never be ignored silently. Every top-level key of
Data-Juicer's process config (``data_juicer/config/config.py``) is listed
here with what ``bettersynth process`` (and the other commands) do with it:

* ``honoured`` — it does here what it does in ``dj-process`` (``np``: image
  decoding workers; ``export_shard_size``: Data-Juicer's shard files; ...);
* ``no effect`` — it only tunes how Data-Juicer runs (fusion, monitors, its
  Hugging Face cache) and the result is the same without it: accepted, and the
  run's report says so;
* a value outside ``allowed`` is refused, naming the key and why.

Example::

    settings = DjSettings.from_recipe(recipe)   # typed values, Data-Juicer's defaults filled in
    settings.np, settings.export_shard_size, settings.keep_stats_in_res_ds
    key_handling(recipe.extra)                  # {"np": "honoured: ...", "op_fusion": "no effect: ..."}
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

HONOURED, NO_EFFECT = "honoured", "no effect"


@dataclass(frozen=True)
class DjKey:
    default: Any  # Data-Juicer's default
    handling: str  # HONOURED or NO_EFFECT (for the values it accepts)
    note: str  # what it does here
    kind: str = "any"  # value type checked: "bool", "int>=0", "int>0", "str", "str|list", "any"
    allowed: tuple | None = None  # the only values accepted (None: any of ``kind``)
    why: str = ""  # why other values are refused


DJ_KEYS: dict[str, DjKey] = {
    "project_name": DjKey("hello_world", HONOURED, "names the run in its report", "str"),
    "dataset_path": DjKey("", HONOURED, "the input: a Data-Juicer jsonl, a LLaVA json or a folder of them", "str"),
    "export_path": DjKey("./outputs/hello_world/hello_world.jsonl", HONOURED, "the kept samples, in Data-Juicer's format", "str"),
    "export_type": DjKey(None, HONOURED, "jsonl or json (else from export_path's suffix)", "any", (None, "jsonl", "json"),
                         "only jsonl and json are written"),
    "export_shard_size": DjKey(0, HONOURED, "bytes per export shard, Data-Juicer's <name>-<i>-of-<n> files (0: one file)", "int>=0"),
    "export_in_parallel": DjKey(False, NO_EFFECT, "the export is written by one process; the bytes are the same", "bool"),
    "export_extra_args": DjKey({}, HONOURED, "none are needed for jsonl/json", "any", ({}, None),
                               "no exporter here takes extra arguments"),
    "keep_stats_in_res_ds": DjKey(False, HONOURED, "keeps __dj__stats__ in the exported samples", "bool"),
    "keep_hashes_in_res_ds": DjKey(False, HONOURED, "keeps the deduplicators' hashes (__dj__hash, ...) in the exported samples", "bool"),
    "np": DjKey(4, HONOURED, "image-decoding workers", "int>0"),
    "text_keys": DjKey("text", HONOURED, "the text field", "any", ("text", ["text"]), "text is always 'text'"),
    "image_key": DjKey("images", HONOURED, "the image list field", "any", ("images",), "images are always 'images'"),
    "image_special_token": DjKey("<__dj__image>", HONOURED, "both <__dj__image> and <image> are read as image tokens", "any",
                                 ("<__dj__image>", "<image>"), "images are marked by <__dj__image> or <image>"),
    "eoc_special_token": DjKey("<|__dj__eoc|>", HONOURED, "the end-of-chunk token", "any", ("<|__dj__eoc|>",),
                               "chunks end with <|__dj__eoc|>"),
    "image_bytes_key": DjKey("image_bytes", NO_EFFECT, "images are read from paths; other fields pass through unchanged", "str"),
    "audio_key": DjKey("audios", NO_EFFECT, "no audio op here; the field passes through unchanged", "str"),
    "audio_special_token": DjKey("<__dj__audio>", NO_EFFECT, "no audio op here", "str"),
    "video_key": DjKey("videos", NO_EFFECT, "no video op here; the field passes through unchanged", "str"),
    "video_special_token": DjKey("<__dj__video>", NO_EFFECT, "no video op here", "str"),
    "suffixes": DjKey([], HONOURED, "which files of a dataset_path folder are read", "str|list"),
    "add_suffix": DjKey(False, HONOURED, "adds __dj__suffix__ (the file's suffix) to each sample", "bool"),
    "turbo": DjKey(False, NO_EFFECT, "the engine batches every op", "bool"),
    "skip_op_error": DjKey(True, HONOURED, "a sample an op fails on is rejected with the reason; the run goes on", "bool",
                           (True,), "a sample an op fails on is always rejected with its reason and the run goes on"),
    "use_cache": DjKey(True, HONOURED, "the on-disk score cache", "bool"),
    "ds_cache_dir": DjKey(None, HONOURED, "the folder of the score cache", "any"),
    "cache_compress": DjKey(None, NO_EFFECT, "score cache entries are small and stored uncompressed", "any",
                            (None, "gzip", "zstd", "lz4"), "Data-Juicer knows gzip, zstd and lz4"),
    "open_monitor": DjKey(True, NO_EFFECT, "per-op counts are in the report; no resource monitor", "bool"),
    "use_checkpoint": DjKey(False, NO_EFFECT, "runs always journal and resume a killed run at its last chunk, same bytes", "bool"),
    "temp_dir": DjKey(None, NO_EFFECT, "partial files live in the output's .resume folder", "any"),
    "open_tracer": DjKey(False, HONOURED, "writes work_dir/trace/{filter,mapper,duplicate}-<op>.jsonl", "bool"),
    "op_list_to_trace": DjKey([], HONOURED, "the ops traced (empty: all)", "str|list"),
    "trace_num": DjKey(10, HONOURED, "samples per trace file", "int>=0"),
    "open_insight_mining": DjKey(False, HONOURED, "no insight mining here", "bool", (False,),
                                 "insight mining is not available; the report has per-op counts"),
    "op_list_to_mine": DjKey([], NO_EFFECT, "only used by insight mining", "any"),
    "op_fusion": DjKey(False, NO_EFFECT, "the engine shares models and batches across ops; same result", "bool"),
    "fusion_strategy": DjKey("probe", NO_EFFECT, "see op_fusion", "str"),
    "adaptive_batch_size": DjKey(False, NO_EFFECT, "batch sizes are the engine's; same result", "bool"),
    "executor_type": DjKey("default", HONOURED, "the local executor", "any", ("default", "local"), "only the local executor"),
    "ray_address": DjKey("auto", NO_EFFECT, "Ray is not used", "str"),
    "work_dir": DjKey(None, HONOURED, "where trace/ goes (default: export_path's folder)", "any"),
    "percentiles": DjKey([], NO_EFFECT, "analysis only (bettersynth analyze)", "any"),
    "export_original_dataset": DjKey(False, NO_EFFECT, "analysis only", "bool"),
    "save_stats_in_one_file": DjKey(False, NO_EFFECT, "analysis only", "bool"),
    "debug": DjKey(False, NO_EFFECT, "use bettersynth -v", "bool"),
    "dataset": DjKey([], HONOURED, "use dataset_path", "any", ([], {}, None), "use dataset_path (a file or a folder)"),
    "generated_dataset_config": DjKey(None, HONOURED, "use dataset_path", "any", (None,), "use dataset_path (a file or a folder)"),
    "validators": DjKey([], HONOURED, "every sample is validated at ingestion", "any", ([], None),
                        "samples are always validated at ingestion (images, tokens, text)"),
    "custom_operator_paths": DjKey(None, HONOURED, "ops are this platform's", "any", (None, []),
                                   "custom operator code is not loaded"),
}
DATA_JUICER_KEYS = frozenset(DJ_KEYS)


def check_value(key: str, value: Any) -> str | None:
    """The problem with ``key: value`` in a recipe, or None when it is accepted."""
    spec = DJ_KEYS[key]
    if spec.allowed is not None:
        if not any(value == a and type(value) is type(a) or (value is None and a is None) for a in spec.allowed):
            why = f": {spec.why}" if spec.why else ""
            only = " or ".join(map(repr, spec.allowed))
            return f"Data-Juicer option {key}={value!r} is not supported (only {only}{why})"
        return None
    ok = {
        "bool": lambda v: isinstance(v, bool),
        "int>=0": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "int>0": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "str": lambda v: isinstance(v, str),
        "str|list": lambda v: isinstance(v, str) or isinstance(v, list) and all(isinstance(x, str) for x in v),
        "any": lambda v: True,
    }[spec.kind](value)
    if not ok:
        wanted = {"bool": "true or false", "int>=0": "an integer >= 0", "int>0": "an integer >= 1", "str": "a string",
                  "str|list": "a string or a list of strings"}[spec.kind]
        return f"Data-Juicer option {key}: must be {wanted}, got {value!r}"
    return None


def key_handling(extra: dict[str, Any]) -> dict[str, str]:
    """For the Data-Juicer keys a recipe gives: ``"honoured: ..."`` or ``"no effect: ..."``."""
    return {key: f"{DJ_KEYS[key].handling}: {DJ_KEYS[key].note}" for key in extra if key in DJ_KEYS}


@dataclass(frozen=True)
class DjSettings:
    """The Data-Juicer keys ``bettersynth process`` acts on, with Data-Juicer's defaults."""

    project_name: str = "hello_world"
    dataset_path: str = ""
    export_path: str = "./outputs/hello_world/hello_world.jsonl"
    export_type: str | None = None
    export_shard_size: int = 0
    keep_stats_in_res_ds: bool = False
    keep_hashes_in_res_ds: bool = False
    np: int = 4
    suffixes: tuple[str, ...] = ()
    add_suffix: bool = False
    use_cache: bool = True
    ds_cache_dir: str | None = None
    open_tracer: bool = False
    op_list_to_trace: tuple[str, ...] = ()
    trace_num: int = 10
    work_dir: str | None = None

    @classmethod
    def from_recipe(cls, recipe: Any) -> DjSettings:
        """The settings a (validated) recipe gives, defaults for the rest."""
        extra = dict(recipe.extra)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in extra and extra[f.name] is not None:
                value = extra[f.name]
                if f.name in ("suffixes", "op_list_to_trace"):
                    value = (value,) if isinstance(value, str) else tuple(value)
                values[f.name] = value
        return cls(**values)

    @property
    def export_format(self) -> str:
        """jsonl or json: ``export_type``, else export_path's suffix (Data-Juicer's rule)."""
        kind = self.export_type or self.export_path.rsplit(".", 1)[-1].lower()
        if kind not in ("jsonl", "json"):
            raise ValueError(f"export_path {self.export_path!r}: Data-Juicer format {kind!r} is not written here "
                             "(use a .jsonl or .json export_path, or export_type: jsonl)")
        return kind
