"""What a run trains with, built once: checked data, decoded images, datasets, the model on its
device, the class weights and the frozen-prefix cache. ``fit`` and the ``lr-find`` command share it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from skyclass.core.preprocess import PreprocessConfig
from skyclass.data.dataset import (
    DataError,
    ImageDataset,
    Manifest,
    class_names_from_root,
    load_images,
    read_manifest,
)
from skyclass.data.transforms import (
    build_test_transform,
    build_train_transform,
    eval_cache_tag,
    eval_input,
    train_cache_tag,
    train_input,
)
from skyclass.train.config import TrainConfig
from skyclass.train.runtime import Runtime
from skyclass.train.sampling import source_balanced_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Data:
    class_names: tuple[str, ...]
    train: Manifest
    val: Manifest
    test: Manifest | None
    #: Per training photo, how likely an epoch draws it (None = each once per epoch).
    train_weights: tuple[float, ...] | None = None


def preprocess_config(config: TrainConfig) -> PreprocessConfig:
    return PreprocessConfig(size=(config.image_size, config.image_size))


def check_data(config: TrainConfig) -> Data:
    """Read and check every manifest before any work; raises DataError with a one-line reason."""
    names = class_names_from_root(config.data_root)
    train = read_manifest(config.train, config.data_root, names)
    val = read_manifest(config.val, config.data_root, names)
    test = read_manifest(config.test, config.data_root, names) if config.test else None
    missing = sorted(set(names) - set(train.labels))
    if missing:
        raise DataError(f"{config.train}: no training images for class(es) {', '.join(missing)}")
    weights = None
    if config.source_balance:
        weights = tuple(
            source_balanced_weights(
                train.labels, _sources_of(train, config), config.source_balance
            ).tolist()
        )
    return Data(class_names=tuple(names), train=train, val=val, test=test, train_weights=weights)


def _sources_of(manifest: Manifest, config: TrainConfig) -> list[str]:
    """Each manifest row's source from ``config.sources``; every row must have one."""
    from skyclass.data.split import SplitInputError, read_groups

    assert config.sources is not None
    try:
        table = read_groups(Path(config.sources), config.source_column)
    except SplitInputError as exc:
        raise DataError(f"sources: {exc}") from exc
    missing = [p for p in manifest.paths if p not in table]
    if missing:
        raise DataError(
            f"{config.sources}: no source for {len(missing)} training file(s), e.g. {missing[0]}"
        )
    return [table[p] for p in manifest.paths]


def decode_eval(
    manifest: Manifest, pre: PreprocessConfig, cache_dir: Any, progress: bool, desc: str
) -> Any:
    """The decoded evaluation images of a manifest (resized as the test pipeline wants them)."""
    return load_images(
        manifest.files(),
        lambda b: eval_input(b, pre),
        tag=eval_cache_tag(pre),
        cache_dir=cache_dir,
        progress=progress,
        desc=desc,
    )


@dataclass(frozen=True)
class TrainingContext:
    """Everything the stages read; built once per run by :func:`build_context`."""

    config: TrainConfig
    runtime: Runtime
    data: Data
    pre: PreprocessConfig
    model: Any
    train_ds: ImageDataset
    #: What epochs draw from: ``train_ds``, or its cached prefix views (a ViewDataset).
    train_src: Any
    val_images: list[Any] | None
    val_loader: Any
    #: The block the training inputs enter at (0: images; the cache's block otherwise).
    start_block: int
    class_weights: Any | None
    feature_cache_seconds: float

    @property
    def names(self) -> list[str]:
        return list(self.data.class_names)


def balanced_class_weights(targets: list[int], names: list[str]) -> Any:
    """n / (classes x count of the class) per class, as a float tensor."""
    import torch

    counts = torch.bincount(torch.tensor(targets), minlength=len(names)).float()
    weights = counts.sum() / (len(names) * counts.clamp(min=1))
    log.info("class weights: %s", dict(zip(names, weights.tolist(), strict=True)))
    return weights


def build_context(
    config: TrainConfig,
    runtime: Runtime,
    *,
    data: Data | None = None,
    model_state: dict[str, Any] | None = None,
    with_val: bool = True,
    feature_cache: bool = True,
    progress: bool = True,
) -> TrainingContext:
    """Decode, build the datasets and the model (seeded by ``config.seed``, then ``model_state``
    if given), and compute the prefix cache when the config asks for it."""
    import torch

    from skyclass.train.features import build_feature_cache
    from skyclass.train.loaders import eval_loader, seed_for

    data = data or check_data(config)
    pre = preprocess_config(config)
    names = list(data.class_names)
    show = progress and runtime.is_main
    train_imgs = load_images(
        data.train.files(),
        lambda b: train_input(b, pre, config.augment),
        tag=train_cache_tag(pre, config.augment),
        memory_budget_mb=config.cache_memory_mb,
        cache_dir=config.cache_dir,
        progress=show,
        desc="decode train",
    )
    val_imgs = None
    if with_val:
        val_imgs = decode_eval(data.val, pre, config.cache_dir, show, "decode val")
    train_ds = ImageDataset(
        train_imgs, data.train.targets(names), build_train_transform(pre, config.augment)
    )
    val_targets = data.val.targets(names) if val_imgs is not None else []
    val_ds = ImageDataset(val_imgs or [], val_targets, build_test_transform(pre))
    val_loader = eval_loader(val_ds, config.eval_batch_size, runtime)

    model = _model_on_device(config, runtime, len(names), model_state)
    class_weights = None
    if config.class_weights == "balanced":
        class_weights = balanced_class_weights(train_ds.targets, names)
    start_block, train_src, seconds = 0, cast(Any, train_ds), 0.0
    if feature_cache and config.feature_cache_views:
        from torch.utils.data import TensorDataset

        start_block = config.feature_cache_block
        train_src, val_x, seconds = build_feature_cache(
            model,
            train_ds,
            val_ds,
            views=config.feature_cache_views,
            block=start_block,
            batch_size=config.eval_batch_size,
            view_seed=lambda v: seed_for(config, 100_000 + v, salt=31),
            progress=show,
            rt=runtime,
        )
        val_loader = eval_loader(
            TensorDataset(val_x, torch.tensor(val_ds.targets)), config.eval_batch_size, runtime
        )
    return TrainingContext(
        config=config,
        runtime=runtime,
        data=data,
        pre=pre,
        model=model,
        train_ds=train_ds,
        train_src=train_src,
        val_images=val_imgs,
        val_loader=val_loader,
        start_block=start_block,
        class_weights=class_weights,
        feature_cache_seconds=seconds,
    )


def _model_on_device(
    config: TrainConfig, runtime: Runtime, n_classes: int, model_state: dict[str, Any] | None
) -> Any:
    """The model seeded by ``config.seed`` (then ``model_state`` if given), on the run's device
    and memory format."""
    import torch

    from skyclass.model import build_model

    torch.manual_seed(config.seed)
    model = build_model(n_classes, weights=config.weights, dropout=config.dropout)
    if model_state is not None:
        model.load_state_dict(model_state)
    model = model.to(runtime.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
