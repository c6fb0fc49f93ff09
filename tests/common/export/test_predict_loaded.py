"""predict_slice with a model loaded once gives what it gives from the checkpoint path."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from common.clinical import get_cutoff
from common.data.dicom_io import write_ct_dicom
from common.export.predict import LoadedModel, load_model, predict_slice
from common.export.result import file_sha256
from common.models.checkpoint import save_checkpoint
from common.models.presets import get_preset
from common.models.sarco import SarcoModel


def test_loaded_model_gives_the_same_outputs(tmp_path):
    yy, xx = np.mgrid[0:96, 0:80]
    hu = np.where(((yy - 48) / 44) ** 2 + ((xx - 40) / 36) ** 2 < 1, 45.0, -1000.0).astype(np.float32)
    dcm = tmp_path / "ct.dcm"
    write_ct_dicom(dcm, hu, (4.0, 4.5), patient_id="sf-9", sex="F", height_m=1.6, weight_kg=60, age_years=70)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", SarcoModel(get_preset("tiny")), phase="seg")
    rule = get_cutoff("prado2008")

    loaded = load_model(ckpt)
    assert isinstance(loaded, LoadedModel) and loaded.sha256 == file_sha256(ckpt) and not loaded.model.training
    by_path = predict_slice(dcm, ckpt, tmp_path / "a", cutoff=rule)
    by_model = predict_slice(dcm, loaded, tmp_path / "b", cutoff=rule)
    assert by_model == by_path == json.loads((tmp_path / "b" / "result.json").read_text())
    mask_a = np.asarray(nib.load(str(tmp_path / "a" / "mask.nii.gz")).dataobj)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "b" / "mask.nii.gz")).dataobj), mask_a)
    assert (tmp_path / "b" / "seg.dcm").is_file()
    with Image.open(tmp_path / "b" / "overlay.png") as im:
        im.load()
        assert im.mode == "RGB" and im.width >= 512
