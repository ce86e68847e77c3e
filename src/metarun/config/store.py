"""Where the configs are: the schema in Hydra's ConfigStore, the YAML folder, and the options of a group."""

from __future__ import annotations

from pathlib import Path

from metarun.config.schema import (
    ANILAlgo,
    CAVIAAlgo,
    Conv4Model,
    ConvexIMAMLAlgo,
    ConvexMAMLAlgo,
    FolderData,
    FOMAMLAlgo,
    IMAMLAlgo,
    MAMLAlgo,
    MAMLPPAlgo,
    MetarunConfig,
    MetaSGDAlgo,
    MiniImageNetData,
    MLPModel,
    OmniglotData,
    ReptileAlgo,
    SineData,
)


def register() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="metarun_schema", node=MetarunConfig)
    cs.store(group="schemas/data", name="sine", node=SineData)
    cs.store(group="schemas/data", name="omniglot", node=OmniglotData)
    cs.store(group="schemas/data", name="miniimagenet", node=MiniImageNetData)
    cs.store(group="schemas/data", name="folder", node=FolderData)
    cs.store(group="schemas/model", name="mlp", node=MLPModel)
    cs.store(group="schemas/model", name="conv4", node=Conv4Model)
    cs.store(group="schemas/algo", name="maml", node=MAMLAlgo)
    cs.store(group="schemas/algo", name="fomaml", node=FOMAMLAlgo)
    cs.store(group="schemas/algo", name="reptile", node=ReptileAlgo)
    cs.store(group="schemas/algo", name="imaml", node=IMAMLAlgo)
    cs.store(group="schemas/algo", name="convex_maml", node=ConvexMAMLAlgo)
    cs.store(group="schemas/algo", name="convex_imaml", node=ConvexIMAMLAlgo)
    cs.store(group="schemas/algo", name="cavia", node=CAVIAAlgo)
    cs.store(group="schemas/algo", name="maml_pp", node=MAMLPPAlgo)
    cs.store(group="schemas/algo", name="meta_sgd", node=MetaSGDAlgo)
    cs.store(group="schemas/algo", name="anil", node=ANILAlgo)


def config_dir() -> str:
    """conf/ shipped in the wheel, else the source tree's top-level conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[3] / "conf")


def options(group: str) -> tuple[str, ...]:
    """The options of a config group: its YAML files, so that adding one is all it takes to offer it."""
    return tuple(sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml")))

