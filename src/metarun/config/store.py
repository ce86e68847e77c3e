"""Where the configs are: the schema in Hydra's ConfigStore, the YAML folder, and the options of a group."""

from __future__ import annotations

from pathlib import Path

from metarun.config.schema import (
    AgreementWeighting,
    ANILAlgo,
    CAVIAAlgo,
    Conv4Model,
    ConvexIMAMLAlgo,
    ConvexMAMLAlgo,
    FolderData,
    FOMAMLAlgo,
    IMAMLAlgo,
    LossSoftmaxWeighting,
    MAMLAlgo,
    MAMLPPAlgo,
    MetarunConfig,
    MetaSGDAlgo,
    MiniImageNetData,
    MLPModel,
    OmniglotData,
    ReptileAlgo,
    SineData,
    UniformWeighting,
)

# Entry-point group of the packages that add config options of their own (an algorithm, a weighting, a
# dataset): each names a function that stores its schemas in Hydra's ConfigStore, called by `register`.
PLUGINS = "metarun.plugins"


def register() -> None:
    """Store metarun's schemas, then every installed plugin's (docs/architecture.md, Your own algorithm)."""
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
    cs.store(group="schemas/weighting", name="uniform", node=UniformWeighting)
    cs.store(group="schemas/weighting", name="agreement", node=AgreementWeighting)
    cs.store(group="schemas/weighting", name="loss_softmax", node=LossSoftmaxWeighting)
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("metarun_groups", groups_help, replace=True)  # conf/config.yaml's help
    register_plugins()


INTERNAL_GROUPS = ("hydra", "schemas")  # Hydra's own, and the schemas the options pull in through their defaults


def groups_help() -> str:
    """`metarun --help`'s config groups, as Hydra lists them (a search path's options included), without the
    internal ones."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()
    lines = []

    def walk(parent: str) -> None:
        for group in sorted(loader.list_groups(parent)):
            name = f"{parent}/{group}" if parent else group
            if name in INTERNAL_GROUPS:
                continue
            options = loader.get_group_options(name, ObjectType.CONFIG)
            if options:
                lines.append(f"{name}: {', '.join(options)}")
            walk(name)

    walk("")
    return "\n".join(lines)


def register_plugins() -> None:
    """Call each `metarun.plugins` entry point; one that cannot be loaded is said in one paragraph."""
    from importlib.metadata import entry_points

    from metarun.config.schema import ConfigError

    for plugin in entry_points(group=PLUGINS):
        try:
            plugin.load()()
        except Exception as e:  # a plugin's own bug or missing dependency: name it, whatever it is
            package = plugin.dist.name if plugin.dist else "an installed package"
            raise ConfigError(
                f"the metarun plugin `{plugin.name}` ({plugin.value}, from {package}) failed to register its "
                f"configs: {type(e).__name__}: {e}. Fix or upgrade that package, or uninstall it "
                f"(`pip uninstall {package}`).") from e


def config_dir() -> str:
    """conf/ shipped in the wheel, else the source tree's top-level conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[3] / "conf")


def options(group: str) -> tuple[str, ...]:
    """The options of a config group: its YAML files, so that adding one is all it takes to offer it."""
    return tuple(sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml")))

