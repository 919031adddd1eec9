"""``model.json``, the run folder's contract between ``captcha-train`` and ``captcha-export``.

:class:`RunInfo` is that contract as code: ``train/fit.py`` (and the export test fixture's
script) write one, ``export/runfolder.py`` reads and checks one. Importing this module needs
neither TensorFlow nor Keras (export and the tests read run folders without them).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Tuple

from .._common import atomic_write_json
from ..metadata import _check, _is_int, _opt_mapping, check_recipe, contract_dict
from ..preprocess import channels
from .model import ModelConfig

#: Version of the ``model.json`` layout (key ``run_info_version``; files without it are 1).
RUN_INFO_VERSION = 1
#: Keys a run folder's ``model.json`` must have; the others have defaults.
REQUIRED_KEYS = ("charset", "blank", "preprocess", "input_shape", "time_steps", "model_config")
KERAS_FLAVOURS = ("keras3", "tf_keras")


def _names(key: str, value: Any) -> Tuple[str, ...]:
    _check(isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value), key,
           "a list of sample names (strings)", value)
    return tuple(value)


@dataclass(frozen=True)
class RunInfo:
    """What a training run tells export about its model (``RUN/model.json``), validated.

    Attributes:
        charset: the symbols, class ``i`` is ``charset[i]``.
        blank: ``len(charset)``, the last class.
        preprocess: the ``to_array`` recipe the model was trained on (read-only mapping).
        input_shape: ``(H, W, 1)``, the recipe's height and width.
        time_steps: frames T of the model's output (``model_config.time_steps``).
        model_config: the :class:`ModelConfig` that rebuilds the graph (export needs it).
        max_label_length: the longest training label.
        min_label_length: the shortest training label (None in runs made before it was kept);
            with ``max_label_length`` it is the length prior export writes into the model.
        data: data summary; ``data["sources"]`` says where the samples came from (a folder, a
            labels file, ``synthetic:N:seed=S:length=A-B``).
        split: how validation was split off (``method``, ``val_fraction``, ``salt``).
        val_files, train_files: sample names (relative to the data folder, or
            ``synthetic/<seed>/<index>``); export calibrates on train, verifies on val.
        package_version, keras, keras_version, mixed_precision, seed: how it was trained;
            ``keras`` is the flavour that saved ``model.keras`` (``keras3`` or ``tf_keras``).
        run_info_version: :data:`RUN_INFO_VERSION` of the writer.
        extra: keys this version does not know (kept on a round trip).
    """

    charset: str
    blank: int
    preprocess: Mapping[str, Any]
    input_shape: Tuple[int, ...]
    time_steps: int
    model_config: ModelConfig
    max_label_length: Optional[int] = None
    min_label_length: Optional[int] = None
    data: Mapping[str, Any] = field(default_factory=dict)
    split: Optional[Mapping[str, Any]] = None
    val_files: Tuple[str, ...] = ()
    train_files: Tuple[str, ...] = ()
    package_version: Optional[str] = None
    keras: str = "keras3"
    keras_version: Optional[str] = None
    mixed_precision: Optional[str] = None
    seed: Optional[int] = None
    run_info_version: int = RUN_INFO_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.charset
        _check(isinstance(c, str) and len(c) > 0 and len(set(c)) == len(c), "charset",
               "a non-empty string of distinct characters", c)
        _check(_is_int(self.blank) and self.blank == len(c), "blank",
               f"len(charset) = {len(c)}", self.blank)
        recipe = check_recipe(self.preprocess)
        h, w = recipe["height"], recipe["width"]
        ch = channels(recipe)
        _check(isinstance(self.input_shape, (list, tuple))
               and tuple(self.input_shape) == (h, w, ch), "input_shape",
               f"[{h}, {w}, {ch}] (the preprocess height, width and colour)", self.input_shape)
        cfg = self.model_config
        if isinstance(cfg, Mapping):
            try:
                cfg = ModelConfig.from_dict(dict(cfg))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"'model_config': {exc}") from None
        _check(isinstance(cfg, ModelConfig), "model_config", "a ModelConfig or its dict", cfg)
        _check((cfg.num_classes, cfg.height, cfg.width) == (len(c) + 1, h, w), "model_config",
               f"num_classes {len(c) + 1}, height {h}, width {w} (charset and preprocess)",
               {"num_classes": cfg.num_classes, "height": cfg.height, "width": cfg.width})
        _check(_is_int(self.time_steps) and self.time_steps == cfg.time_steps, "time_steps",
               f"model_config's {cfg.time_steps}", self.time_steps)
        _check(self.max_label_length is None or (_is_int(self.max_label_length)
                                                 and self.max_label_length >= 1),
               "max_label_length", "an int >= 1 or null", self.max_label_length)
        _check(self.min_label_length is None or (
            _is_int(self.min_label_length) and 1 <= self.min_label_length
            and (self.max_label_length is None or self.min_label_length <= self.max_label_length)),
            "min_label_length", "an int from 1 to max_label_length, or null", self.min_label_length)
        _check(self.keras in KERAS_FLAVOURS, "keras", " or ".join(KERAS_FLAVOURS), self.keras)
        for key in ("package_version", "keras_version", "mixed_precision"):
            v = getattr(self, key)
            _check(v is None or isinstance(v, str), key, "a string or null", v)
        _check(self.seed is None or _is_int(self.seed), "seed", "an int or null", self.seed)
        v = self.run_info_version
        _check(_is_int(v) and 1 <= v <= RUN_INFO_VERSION, "run_info_version",
               f"1..{RUN_INFO_VERSION} (a newer captcha-train wrote it: upgrade captcha-edge)", v)
        data = _opt_mapping("data", self.data)
        sources = (data or {}).get("sources", [])
        _check(isinstance(sources, list) and all(isinstance(s, str) for s in sources),
               "data.sources", "a list of strings", sources)
        put = object.__setattr__
        put(self, "preprocess", recipe)
        put(self, "input_shape", tuple(self.input_shape))
        put(self, "model_config", cfg)
        put(self, "data", data)
        put(self, "split", _opt_mapping("split", self.split))
        put(self, "val_files", _names("val_files", self.val_files))
        put(self, "train_files", _names("train_files", self.train_files))
        put(self, "extra", _opt_mapping("extra", self.extra))

    @property
    def label_lengths(self) -> Optional[Tuple[int, int]]:
        """(shortest, longest) training label, or None when the run did not record both."""
        if self.min_label_length is None or self.max_label_length is None:
            return None
        return self.min_label_length, self.max_label_length

    @classmethod
    def from_dict(cls, d: Any) -> RunInfo:
        """Validate a decoded ``model.json``.

        Raises:
            ValueError: not a JSON object, missing :data:`REQUIRED_KEYS` (all of them named), or a
                key with the wrong type or value (named).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"expected a JSON object; got {type(d).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise ValueError(f"missing keys {', '.join(missing)}; re-run captcha-train")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})

    def __reduce__(self) -> Tuple[Any, ...]:
        # Pickle through the JSON form (the read-only mapping fields cannot be pickled as is).
        return (type(self).from_dict, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (what ``model.json`` holds)."""
        return contract_dict(self)

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        """Read and validate ``path`` (a ``model.json``).

        Raises:
            ValueError: ``"<path>: <problem>"`` for an unreadable, non-JSON or invalid file.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: not readable JSON ({exc})") from None
        try:
            return cls.from_dict(raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def write(self, path: Path) -> None:
        """Write ``model.json`` atomically."""
        atomic_write_json(path, self.to_dict())
