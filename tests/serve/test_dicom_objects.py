"""The node's result objects as a validator, DCMTK and a reviewer see them (no network).

Every object is built by the code the node runs (:func:`omsf2.serve.dicom_build.build_files`, in
this process) from a synthetic DX and from pydicom-data's real 1955 x 1841 CR, then checked with
``dciodvfy`` (Debian's dicom3tools), ``dsrdump`` (DCMTK) and pydicom.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from omsf2.config import PreprocessSpec
from omsf2.serve import dicom_build
from omsf2.serve.dicom_build import BuildJob, build_files
from omsf2.serve.dicom_maps import SC_MAX_SIDE, palette
from omsf2.serve.dicom_results import CODES, CODING_SCHEME, ModelInfo, read_stage, result_uids

CLASSES = ("normal", "stage I", "stage II", "stage III")
MODEL = ModelInfo("omsf2-cxr", "3.1.0", "ab" * 32, "ort", CLASSES)
SPEC = PreprocessSpec(size=(64, 64))
_YY, _XX = np.mgrid[0:8, 0:8]
#: The heat map over the model input: one hot spot at (3, 5) of 8 x 8.
HEAT = np.asarray(np.exp(-((_YY - 3.0) ** 2 + (_XX - 5.0) ** 2) / 6.0), np.float32)
#: What dciodvfy reports on every Parametric Map with a palette (Pixel Presentation COLOR_RANGE): the
#: dicom3tools of Debian 12 (1.00~20220618) checks the palette descriptors and data against the Image
#: Pixel Description macro's condition, which names only PALETTE COLOR, COLOR and MIXED, and checks
#: the Stored Value Color Range's FD values as strings. Any other error fails the test (docs/dicom-node.md).
PM_VALIDATOR_DEFECTS = {
    *(
        "Error - Attribute present when condition unsatisfied (which may not be present otherwise) Type 1C "
        f"Conditional Element=<{c}PaletteColorLookupTable{part}> Module=<ImagePixelDescriptionMacro>"
        for c in ("Red", "Green", "Blue")
        for part in ("Descriptor", "Data")
    ),
    "Error - Non-string attribute while verifying string enumerated value for attribute <Minimum Stored Value Mappe>",
    "Error - Non-string attribute while verifying string enumerated value for attribute <Maximum Stored Value Mapped>",
}
#: Warnings dciodvfy may give, each explained in docs/dicom-node.md.
ALLOWED_WARNINGS = (
    "Unrecognized defined term <99OMSF2> for value 1 of attribute <Coding Scheme Designator>",  # the private codes
    "Unrecognized defined term <QUANTITY> for value 4 of attribute <Frame Type>",  # PM: highdicom's image flavour
    "Unrecognized defined term <QUANTITY> for value 4 of attribute <Image Type>",
    "Retired Person Name form",  # RG1_UNCR's own Referring Physician's Name, copied from the source
)


def _sources(kit: Any) -> dict[str, Any]:
    from pydicom.data import get_testdata_file

    dx = kit.make_dx(kit.phantom(300, 260, 5), ImagerPixelSpacing=[0.15, 0.15])
    return {"dx": dx, "cr": pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))}


def _build(source: Any, kinds: tuple[str, ...] = ("sr", "pm", "sc")) -> dict[str, bytes]:
    """The node's result files for ``source``, with a heat map that has one hot spot at (3, 5) of 8 x 8."""
    import tempfile

    from omsf2.data.io import read_image
    from omsf2.serve.dicom_pipeline import _sc_image

    dicom_build.init_worker(MODEL, SPEC, kinds, f"{MODEL.digest}/{MODEL.backend}")
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        source.save_as(f.name, enforce_file_format=True)
        img, header = read_image(f.name), pydicom.dcmread(f.name, stop_before_pixels=True)
    heat = HEAT
    probs = {"normal": 0.1, "stage I": 0.6, "stage II": 0.2, "stage III": 0.1}
    job = BuildJob(str(source.SOPInstanceUID), header, "stage I", probs, heat, (img.shape[0], img.shape[1]),
                   _sc_image(img))  # fmt: skip
    return build_files(job).files


@pytest.fixture(scope="module")
def built(kit: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("objects")
    out: dict[str, dict[str, Path]] = {}
    for name, source in _sources(kit).items():
        out[name] = {"source": root / f"{name}.dcm"}
        source.save_as(out[name]["source"], enforce_file_format=True)
        for file, data in _build(source).items():
            out[name][file.removesuffix(".dcm")] = root / f"{name}-{file}"
            out[name][file.removesuffix(".dcm")].write_bytes(data)
    return out


def _validate(kit: Any, path: Path, allowed_errors: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """dciodvfy's errors on ``path`` (only ``allowed_errors`` may be among them) and no unexplained warning."""
    errors, warnings = kit.dciodvfy(path)
    assert set(errors) <= allowed_errors, errors
    unexplained = [w for w in warnings if not any(a in w for a in ALLOWED_WARNINGS)]
    assert unexplained == [], unexplained
    return errors


@pytest.mark.parametrize("source", ["dx", "cr"])
def test_the_sr_is_coded_valid_and_dcmtk_reads_it(built, kit, source: str) -> None:
    path = built[source]["sr"]
    assert _validate(kit, path) == []
    dump = subprocess.run(["dsrdump", "+Pc", str(path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and not dump.stderr.strip(), dump.stderr
    for value, scheme, meaning in (CODES["finding"], CODES["probability"], CODES["finding_site"], CODES["normal"]):
        assert f'({value},{scheme},"{meaning}")' in dump.stdout, (value, dump.stdout[:2000])
    assert '(111001,DCM,"Algorithm Name")="omsf2-cxr"' in dump.stdout
    assert '(111003,DCM,"Algorithm Version")="3.1.0"' in dump.stdout
    sr = pydicom.dcmread(path)
    assert read_stage(sr, CLASSES) == ("stage I", {"normal": 0.1, "stage I": 0.6, "stage II": 0.2, "stage III": 0.1})
    src = pydicom.dcmread(built[source]["source"], stop_before_pixels=True)
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.PatientID == src.PatientID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID


def test_the_code_table_uses_standard_codes_where_dicom_has_them() -> None:
    """Every DCM and SNOMED code the node writes that DICOM's tables hold has their meaning; private codes are few."""
    standard = {c.value: c.meaning for c in (codes.DCM.Probability, codes.DCM.ClassActivation, codes.SCT.Lung,
                                              codes.SCT.Normal)}  # fmt: skip
    for value, scheme, meaning in CODES.values():
        if value in standard:
            assert standard[value] == meaning
        assert scheme in ("SCT", "DCM", CODING_SCHEME)
    assert [k for k, (_, s, _) in CODES.items() if s == CODING_SCHEME] == ["stage"]


@pytest.mark.parametrize("source", ["dx", "cr"])
def test_the_pm_maps_the_heat_map_onto_its_source(built, kit, source: str) -> None:
    path = built[source]["pm"]
    _validate(kit, path, PM_VALIDATOR_DEFECTS)
    pm = pydicom.dcmread(path)
    src = pydicom.dcmread(built[source]["source"], stop_before_pixels=True)
    assert pm.SOPClassUID == dicom_build.SOP_CLASSES["pm"]
    assert pm.file_meta.TransferSyntaxUID == dicom_build.FILE_SYNTAXES["pm"]
    assert (pm.Rows, pm.Columns) == (src.Rows, src.Columns) and pm.StudyInstanceUID == src.StudyInstanceUID
    assert pm.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    derivation = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert derivation.ReferencedSOPInstanceUID == src.SOPInstanceUID and derivation.SpatialLocationsPreserved == "YES"
    assert pm.PixelPresentation == "COLOR_RANGE" and len(pm.RedPaletteColorLookupTableData) == 2 * len(palette())
    rw = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert rw.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == CODES["class_activation"][0]
    values = pm.pixel_array.astype(np.float64) * float(rw.RealWorldValueSlope) + float(rw.RealWorldValueIntercept)
    from omsf2.data.preprocess import unletterbox

    want = unletterbox(HEAT, (src.Rows, src.Columns), SPEC)  # the heat map over the image, as the node maps it
    np.testing.assert_allclose(values, want, atol=float(rw.RealWorldValueSlope) / 2 + 1e-6)
    peak = np.unravel_index(int(values.argmax()), values.shape)
    assert abs(peak[1] / src.Columns - 5.5 / 8) < 0.15 and abs(peak[0] / src.Rows - 3.5 / 8) < 0.15


@pytest.mark.parametrize("source", ["dx", "cr"])
def test_the_sc_is_what_a_reviewer_wants(built, kit, source: str) -> None:
    path = built[source]["sc"]
    assert _validate(kit, path) == []
    sc = pydicom.dcmread(path)
    src_path = built[source]["source"]
    src = pydicom.dcmread(src_path, stop_before_pixels=True)
    assert sc.file_meta.TransferSyntaxUID == dicom_build.FILE_SYNTAXES["sc"] and sc.BurnedInAnnotation == "NO"
    assert max(src.Rows, src.Columns) <= SC_MAX_SIDE or max(sc.Rows, sc.Columns) < 1.2 * SC_MAX_SIDE
    assert path.stat().st_size < src_path.stat().st_size / 2  # compressed (and scaled), not 1.5x its source
    rgb = np.asarray(sc.pixel_array, np.int32)  # pydicom decodes the JPEG's YBR to RGB
    from omsf2.serve.dicom_maps import sc_size

    rows, cols = sc_size(src.Rows, src.Columns)
    band = rgb[: rgb.shape[0] - rows]  # the text above the image
    red_text = (band[..., 0] > 120) & (band[..., 0] > band[..., 1] + 50) & (band[..., 0] > band[..., 2] + 50)
    white_text = band.min(axis=-1) > 180
    assert red_text.sum() > 20 and white_text.sum() > 20  # "NOT FOR DIAGNOSTIC USE" in red, the result in white
    legend = rgb[:, cols:]  # the colour bar right of the image, from blue (low) to red (high)
    assert ((legend[..., 2] - legend[..., 0]) > 100).any() and ((legend[..., 0] - legend[..., 2]) > 100).any()


def test_results_follow_the_results_option(kit) -> None:
    files = _build(_sources(kit)["dx"], kinds=("sr",))
    assert sorted(files) == ["sr.dcm"]
    uids = result_uids("1.2.3", MODEL)
    assert len({uids.sr, uids.pm, uids.sc}) == 3
