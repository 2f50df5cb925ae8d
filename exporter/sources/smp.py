"""segmentation_models_pytorch folders (``save_pretrained``, its Hub mixin): a segmenter built from its config.

``config.json`` holds ``_model_class`` (Unet, FPN, DeepLabV3Plus, …) and the constructor's
arguments, beside ``model.safetensors``. The class is built without downloading encoder weights,
then the folder's weights are loaded strictly. The model returns its class map. (An smp
state_dict saved with torch.save is an ordinary state_dict: ``--arch segmentation_models_pytorch:Unet``.)
"""

from __future__ import annotations

from exporter.errors import BackendUnavailable, CheckpointError, first_line
from exporter.loading.modules import load_state_dict_strict
from exporter.loading.probe import CheckpointFile
from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints
from exporter.sources import Source, hub_folder

INSTALL = "pip install segmentation-models-pytorch"


def recognises(found: CheckpointFile) -> bool:
    return isinstance(found.config.get("_model_class"), str)


def read(found: CheckpointFile) -> RawCheckpoint:
    import importlib.util

    folder, config = found.path, found.config
    hub_folder.refuse_weights_choice(found)
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        raise BackendUnavailable(f"{folder} is a segmentation_models_pytorch folder and it is not installed: {INSTALL}")
    import segmentation_models_pytorch as smp

    name = config["_model_class"]
    cls = getattr(smp, name, None)
    if not isinstance(cls, type):
        raise CheckpointError(
            f"{folder}/config.json names model class {name!r}, which segmentation_models_pytorch {smp.__version__} does not have"
        )
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    kwargs["encoder_weights"] = None  # the folder's own weights follow; never download
    try:
        model = cls(**kwargs)
    except Exception as exc:  # user config
        raise CheckpointError(
            f"segmentation_models_pytorch cannot build {name} from {folder}/config.json ({first_line(exc)})"
        ) from exc
    state_dict, notes = hub_folder.read_weights(found)
    load_state_dict_strict(model, state_dict, f"smp.{name}")
    spec = {"input_shape": (int(kwargs.get("in_channels") or 3), 256, 256)}  # any multiple of 32; --input-shape to change
    hints = Hints(names=[(f"smp.{name}({kwargs.get('encoder_name', '?')})", "config.json _model_class")], spec=spec)
    return RawCheckpoint(
        form=f"segmentation_models_pytorch folder ({hub_folder.weights_file(folder).name})",
        module=model,
        hints=hints,
        notes=notes,
        written_by=f"segmentation_models_pytorch {smp.__version__} save_pretrained",
    )


FOLDER = Source(
    name="smp", stage="folder", recognises=recognises, read=read, reads="segmentation_models_pytorch save_pretrained folders"
)
