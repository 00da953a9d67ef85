"""Embedded phantom cohort: CBIS-DDSM- and BCDR-format data that the rest of the DAG cannot tell
from the real thing.

What is written (all seeded, no network):

* ``CBIS-DDSM/`` — DICOM in the folder layout the NBIA Data Retriever produces
  (``<PatientID>/<date>-DDSM-NA-<n>/1.000000-<description>-<n>/1-<k>.dcm``): 16-bit MONOCHROME2 full
  mammograms, and per abnormality an ROI series holding an 8-bit binary mask and a 16-bit cropped
  patch in random order (about 7% of abnormalities keep mask and patch in two series, as in the
  real collection). A few masks differ in size from their mammogram, as in the real data.
* ``metadata/`` — the four case-description CSVs with the real column names and quirks: CRLF line
  ends, ``000000.dcm``/``000001.dcm`` names that differ from the served ``1-1.dcm``/``1-2.dcm``, a
  trailing newline inside the quoted ROI-mask (mass) or cropped-image (calc) path, ``breast
  density`` spelled differently in the calc files, one duplicated mass row.
* ``BCDR/BCDR-D01_dataset/`` — an 8-bit TIFF external set with ``bcdr_d01_outlines.csv``
  (``lw_x_points``/``lw_y_points`` polygons, leading-space quirks, calcification-only rows) and a
  visible domain shift (other size, tone curve, texture scale and noise).

Benign masses are round/oval/lobulated with smooth circumscribed margins; malignant ones are
irregular with spiculated or ill-defined margins. About 8% of lesions take the other class's
morphology (as happens in reality), so the task is learnable but not trivial.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from mammodp.config import CASE_CSVS
from mammodp.fileio import atomic_dir

log = logging.getLogger(__name__)

MASS_HEADER = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CALC_HEADER = [
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
BCDR_HEADER = [
    "patient_id",
    "study_id",
    "series",
    "lesion_id",
    "segmentation_id",
    "image_view",
    "image_filename",
    "lw_x_points",
    "lw_y_points",
    "mammography_type",
    "mammography_nodule",
    "mammography_calcification",
    "mammography_microcalcification",
    "mammography_axillary_adenopathy",
    "mammography_architectural_distortion",
    "mammography_stroma_distortion",
    "age",
    "density",
    "classification",
]
BCDR_VIEWS = {("RIGHT", "CC"): 1, ("LEFT", "CC"): 2, ("RIGHT", "MLO"): 3, ("LEFT", "MLO"): 4}
BCDR_VIEW_NAMES = {1: "RCC", 2: "LCC", 3: "RO", 4: "LO"}
FIRST_NAMES = ["ANNA", "MARIA", "LENA", "JOAN", "RUTH", "CLARA", "ROSA", "EDITH", "NORA", "IDA"]
LAST_NAMES = ["PHANTOMOVA", "TESTWOMAN", "SYNTHETICA", "MOCKSDOTTIR", "FAKEFIELD", "DUMMYSON"]
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root


@dataclass(frozen=True)
class PhantomSpec:
    seed: int = 2024
    patients_train: int = 64
    patients_test: int = 24
    patients_external: int = 20
    height: int = 1024
    width: int = 640


@dataclass
class Mass:
    label: int  # 1 benign, 0 malignant
    pathology: str
    shape: str
    margins: str
    spiculated: bool
    irregular: bool
    radius: float
    contrast: float  # added density at the centre, relative to the [0, 1] tissue scale
    satellite: bool  # a second small contour in the same mask (rare in reality, exercised here)


# ----------------------------------------------------------------------------- image synthesis


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-8)


def tissue_texture(rng, h, w, scale: float = 1.0) -> np.ndarray:
    """Power-law-like parenchymal texture (roughly 1/f^3, as mammographic background)."""
    lh, lw = h // 4, w // 4
    tex = (
        0.55 * _smooth_noise(rng, (lh, lw), 10 * scale)
        + 0.30 * _smooth_noise(rng, (lh, lw), 4 * scale)
        + 0.15 * _smooth_noise(rng, (lh, lw), 1.5 * scale)
    )
    tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_CUBIC)
    return tex + 0.08 * _smooth_noise(rng, (h, w), 0.8)


def ductal_streaks(rng, h, w, nipple: tuple[float, float]) -> np.ndarray:
    """Fibrous texture (ducts, Cooper's ligaments) converging on the nipple: noise blurred
    along the radial direction in polar coordinates around the nipple, patchy in strength."""
    radius = float(np.hypot(w, h))
    polar = rng.standard_normal((360, 256)).astype(np.float32)  # (angle bins, radius bins)
    polar = cv2.GaussianBlur(polar, (0, 0), sigmaX=10, sigmaY=1.5)
    flags = cv2.WARP_POLAR_LINEAR | cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR
    streaks = cv2.warpPolar(polar, (w, h), nipple, radius, flags)
    streaks /= streaks.std() + 1e-8
    patches = np.clip(_smooth_noise(rng, (h // 8, w // 8), 4) + 0.3, 0, None)
    return streaks * cv2.resize(patches, (w, h), interpolation=cv2.INTER_LINEAR)


def breast_image(rng, h, w, side: str, view: str, density: int, tex_scale=1.0):
    """Return (intensity in [0, 1], breast mask) with chest wall on the side's edge."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy = h * rng.uniform(0.45, 0.55)
    ry = h * rng.uniform(0.40, 0.47)
    rx = w * rng.uniform(0.70, 0.85)
    dist_x = xx if side == "RIGHT" else (w - 1 - xx)  # distance from the chest wall
    r = np.sqrt((dist_x / rx) ** 2 + ((yy - cy) / ry) ** 2)
    breast = r < 1.0
    # Tissue thins towards the skin line: intensity falls off in the outer rim.
    thickness = np.clip((1.0 - r) / 0.12, 0, 1) ** 0.5
    glandular = np.clip(1.0 - r, 0, 1) ** 0.7 * (0.25 + 0.12 * density)
    nipple = (rx if side == "RIGHT" else w - 1 - rx, cy)
    tex = tissue_texture(rng, h, w, tex_scale) + 0.45 * ductal_streaks(rng, h, w, nipple)
    img = thickness * (0.30 + glandular + 0.06 * tex * (0.5 + density / 4))
    if view == "MLO":  # pectoral muscle: a bright band at the chest wall, top, soft-edged
        px = w * rng.uniform(0.25, 0.4)
        py = h * rng.uniform(0.35, 0.5)
        muscle = ((dist_x / px + yy / py) < 1.0).astype(np.float32)
        muscle = cv2.GaussianBlur(muscle, (0, 0), 6)
        img = img + muscle * (0.25 + 0.02 * tex)
    img = np.where(breast, img, 0.0)
    img = img + 0.01 * rng.standard_normal((h, w)).astype(np.float32)  # detector/film noise
    return np.clip(img, 0, 1).astype(np.float32), breast


def _radius_profile(rng, m: Mass, n=720):
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    elong = rng.uniform(1.0, 1.5) if m.shape in ("OVAL", "LOBULATED", "IRREGULAR") else 1.05
    phase = rng.uniform(0, np.pi)
    base = (
        m.radius
        / np.sqrt((np.cos(theta - phase) / elong) ** 2 + (np.sin(theta - phase) * 1.0) ** 2)
        / np.sqrt(elong)
    )
    pert = np.zeros_like(theta)
    if m.irregular:
        for k in range(3, 11):
            pert += rng.uniform(0.03, 0.09) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    elif m.shape == "LOBULATED":
        k = int(rng.integers(3, 6))
        pert += rng.uniform(0.08, 0.14) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    else:
        pert += rng.uniform(0.01, 0.04) * np.cos(2 * theta + rng.uniform(0, 2 * np.pi))
    return theta, base * (1 + pert)


def render_mass(rng, img: np.ndarray, cx: float, cy: float, m: Mass, contrast: float | None = None):
    """Add the mass to ``img`` in place; return its binary core mask (uint8 0/1) for the ROI."""
    h, w = img.shape
    contrast = m.contrast if contrast is None else contrast
    theta, rad = _radius_profile(rng, m)
    reach = int(rad.max() * (3.2 if m.spiculated else 1.6)) + 8
    x0, x1 = max(0, int(cx) - reach), min(w, int(cx) + reach)
    y0, y1 = max(0, int(cy) - reach), min(h, int(cy) + reach)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    ang = np.mod(np.arctan2(dy, dx), 2 * np.pi)
    idx = (ang / (2 * np.pi) * len(theta)).astype(int) % len(theta)
    rb = rad[idx]
    d = np.sqrt(dx**2 + dy**2)
    edge = {"CIRCUMSCRIBED": 1.2, "OBSCURED": 2.5, "ILL_DEFINED": 4.5, "SPICULATED": 2.5}[m.margins]
    body = 1.0 / (1.0 + np.exp((d - rb) / edge))
    dome = 0.8 + 0.2 * np.clip(1 - (d / rb) ** 2, 0, 1)
    add = contrast * body * dome
    if m.spiculated:
        spic = np.zeros_like(add)
        for _ in range(int(rng.integers(10, 22))):
            a = rng.uniform(0, 2 * np.pi)
            r0 = np.interp(a, theta, rad, period=2 * np.pi) * 0.8
            length = m.radius * rng.uniform(0.8, 2.0)
            p0 = (cx + r0 * np.cos(a) - x0, cy + r0 * np.sin(a) - y0)
            p1 = (p0[0] + length * np.cos(a), p0[1] + length * np.sin(a))
            layer = np.zeros_like(add)
            thick = int(rng.integers(2, 4))
            cv2.line(layer, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 1.0, thick)
            # Taper: spicules fade with distance from the mass.
            fade = np.clip(1 - (d - r0) / (length + 1e-3), 0, 1)
            spic = np.maximum(spic, layer * fade)
        spic = cv2.GaussianBlur(spic, (0, 0), 0.9)
        add = np.maximum(add, contrast * 0.65 * spic)
    img[y0:y1, x0:x1] = np.clip(img[y0:y1, x0:x1] + add, 0, 1)
    core = np.zeros((h, w), np.uint8)
    core[y0:y1, x0:x1] = (d <= rb).astype(np.uint8)
    return core


def draw_mass_class(rng, label: int, pathology: str, scale: float) -> Mass:
    """Morphology by class: malignant masses irregular, spiculated or ill-defined, on average
    larger and denser; benign ones round/oval/lobulated, circumscribed, smaller and fainter."""
    swap = rng.random() < 0.08  # morphology of the other class, as happens in reality
    if (label == 0) != swap:
        margins = str(rng.choice(["SPICULATED", "SPICULATED", "ILL_DEFINED"]))
        return Mass(
            label,
            pathology,
            "IRREGULAR",
            margins,
            spiculated=margins == "SPICULATED",
            irregular=True,
            radius=scale * rng.uniform(32, 62),
            contrast=rng.uniform(0.18, 0.28),
            satellite=rng.random() < 0.06,
        )
    return Mass(
        label,
        pathology,
        str(rng.choice(["ROUND", "OVAL", "OVAL", "LOBULATED"])),
        str(rng.choice(["CIRCUMSCRIBED", "CIRCUMSCRIBED", "OBSCURED"])),
        spiculated=False,
        irregular=False,
        radius=scale * rng.uniform(22, 46),
        contrast=rng.uniform(0.10, 0.18),
        satellite=False,
    )


def _place(rng, breast: np.ndarray, margin: int):
    ys, xs = np.nonzero(breast[margin:-margin, margin:-margin])
    if len(xs) == 0:
        raise RuntimeError("phantom breast region too small for a mass")
    i = int(rng.integers(len(xs)))
    return float(xs[i] + margin), float(ys[i] + margin)


# ----------------------------------------------------------------------------- DICOM writing


def _uid(*parts) -> str:
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts])


def write_dicom(
    path: Path, pixels: np.ndarray, *, header: dict, series_uid: str, sop_uid: str, instance: int
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for key, value in header.items():
        setattr(ds, key, value)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _to_uint16(img: np.ndarray, rng) -> np.ndarray:
    lo, hi = rng.uniform(400, 1500), rng.uniform(52000, 64000)  # film digitiser range
    return np.clip(lo + img * (hi - lo), 0, 65535).astype(np.uint16)


# ----------------------------------------------------------------------------- cohorts


@dataclass(frozen=True)
class _CbisPatient:
    """A phantom CBIS-DDSM patient: one breast, its masses (seen in both views), identity."""

    pid: int
    side: str
    density: int
    masses: list[Mass]
    name: str
    birth: str

    @property
    def patient_id(self) -> str:
        return f"P_{self.pid:05d}"


@dataclass(frozen=True)
class _Mammogram:
    """A written full mammogram: what its ROI series and metadata rows refer back to."""

    image_id: str
    header: dict
    date: str  # MM-DD-YYYY, as in the folder names
    path: str  # as the case-description CSVs spell it


def _draw_pathology(rng: np.random.Generator) -> tuple[int, str]:
    """Draw a mass's (label, pathology) with the collection's class shares."""
    u = rng.random()
    if u < 0.47:
        return 0, "MALIGNANT"
    return (1, "BENIGN") if u < 0.9 else (1, "BENIGN_WITHOUT_CALLBACK")


def _draw_cbis_patient(rng: np.random.Generator, last_pid: int) -> _CbisPatient:
    """Draw the patient after number ``last_pid`` (ids increase with random gaps)."""
    pid = last_pid + int(rng.integers(1, 5))
    side = str(rng.choice(["LEFT", "RIGHT"]))
    density = int(rng.integers(1, 5))
    n_masses = 2 if rng.random() < 0.15 else 1
    masses = []
    for _ in range(n_masses):
        label, pathology = _draw_pathology(rng)
        masses.append(draw_mass_class(rng, label, pathology, scale=1.0))
    name = f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}"
    year, month, day = (int(v) for v in rng.integers([1930, 1, 1], [1975, 13, 28]))
    return _CbisPatient(pid, side, density, masses, name, f"{year}{month:02d}{day:02d}")


def _satellite_of(m: Mass) -> Mass:
    """The small irregular second contour drawn beside a mass that has ``satellite`` set."""
    return dataclasses.replace(
        m,
        shape="IRREGULAR",
        spiculated=False,
        irregular=True,
        radius=m.radius * 0.35,
        contrast=m.contrast * 0.8,
        satellite=False,
    )


def _render_masses(
    rng: np.random.Generator, img: np.ndarray, breast: np.ndarray, masses: list[Mass], width: int
) -> list[np.ndarray]:
    """Place and draw each mass (and its satellite) into ``img``; return their core masks."""
    masks = []
    for m in masses:
        cx, cy = _place(rng, breast, margin=int(m.radius * 2.5) + 10)
        core = render_mass(rng, img, cx, cy, m)
        if m.satellite:
            sx = cx + m.radius * 2.2 * (1 if cx < width / 2 else -1)
            core |= render_mass(rng, img, sx, cy, _satellite_of(m))
        masks.append(core)
    return masks


def _write_mammogram(
    out: Path,
    spec: PhantomSpec,
    rng: np.random.Generator,
    p: _CbisPatient,
    view: str,
    image_id: str,
    pix: np.ndarray,
    series_counter: int,
) -> tuple[_Mammogram, int]:
    """Write a full-mammogram series; return it and the advanced series counter."""
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 28))
    date = f"{month:02d}-{day:02d}-2016"  # folder names use MM-DD-YYYY
    study_uid = _uid(spec.seed, image_id, "study")
    series_uid = _uid(spec.seed, image_id, "series")
    series_counter += int(rng.integers(1, 50))
    header = dict(
        PatientID=image_id,
        PatientName=p.name,
        PatientBirthDate=p.birth,
        PatientSex="F",
        StudyInstanceUID=study_uid,
        StudyDate=f"2016{month:02d}{day:02d}",
        SeriesDescription="full mammogram images",
        SeriesNumber=1,
        Laterality=p.side[0],
        ViewPosition=view,
        BodyPartExamined="BREAST",
    )
    study_dir = f"{date}-DDSM-NA-{int(rng.integers(10000, 99999))}"
    series_dir = f"1.000000-full mammogram images-{series_counter}"
    write_dicom(
        out / "CBIS-DDSM" / image_id / study_dir / series_dir / "1-1.dcm",
        pix,
        header=header,
        series_uid=series_uid,
        sop_uid=_uid(spec.seed, image_id, "sop"),
        instance=1,
    )
    image_path = f"{image_id}/{study_uid}/{series_uid}/000000.dcm"
    return _Mammogram(image_id, header, date, image_path), series_counter


def _roi_mask(rng: np.random.Generator, core: np.ndarray, spec: PhantomSpec) -> np.ndarray:
    """The 8-bit ROI mask image of a lesion core; a few are resized, as in the real data."""
    mask = (core * 255).astype(np.uint8)
    if rng.random() < 0.06:  # real quirk: mask size differs from the mammogram
        dh, dw = int(rng.integers(-8, 9)), int(rng.integers(-8, 9))
        mask = cv2.resize(
            mask, (spec.width + dw, spec.height + dh), interpolation=cv2.INTER_NEAREST
        )
    return mask


def _cropped_patch(pix: np.ndarray, core: np.ndarray, pad: int = 10) -> np.ndarray:
    """The mammogram cut to the core's bounding box plus ``pad`` pixels."""
    ys, xs = np.nonzero(core)
    return pix[max(0, ys.min() - pad) : ys.max() + pad, max(0, xs.min() - pad) : xs.max() + pad]


def _write_roi_two_series(
    roi_dir: Path,
    spec: PhantomSpec,
    roi_id: str,
    roi_header: dict,
    mask: np.ndarray,
    patch: np.ndarray,
    series_counter: int,
) -> tuple[str, str]:
    """Write mask and patch as two single-file series; return (crop, mask) series/file names."""
    mask_series = _uid(spec.seed, roi_id, "mask")
    crop_series = _uid(spec.seed, roi_id, "crop")
    write_dicom(
        roi_dir / f"1.000000-ROI mask images-{series_counter}" / "1-1.dcm",
        mask,
        header=roi_header,
        series_uid=mask_series,
        sop_uid=_uid(spec.seed, roi_id, "mask-sop"),
        instance=1,
    )
    write_dicom(
        roi_dir / f"1.000000-cropped images-{series_counter + 1}" / "1-1.dcm",
        patch,
        header=dict(roi_header, SeriesDescription="cropped images"),
        series_uid=crop_series,
        sop_uid=_uid(spec.seed, roi_id, "crop-sop"),
        instance=1,
    )
    return f"{crop_series}/000000.dcm", f"{mask_series}/000000.dcm"


def _write_roi_one_series(
    roi_dir: Path,
    spec: PhantomSpec,
    rng: np.random.Generator,
    roi_id: str,
    roi_header: dict,
    mask: np.ndarray,
    patch: np.ndarray,
    series_counter: int,
) -> tuple[str, str]:
    """Write mask and patch into one series in random order; return (crop, mask) names as
    the CSVs list them (always 000000 crop, 000001 mask, whatever the order served)."""
    roi_series = _uid(spec.seed, roi_id, "roi")
    items = [("mask", mask), ("crop", patch)]
    if rng.random() < 0.5:
        items.reverse()
    for k, (kind, arr) in enumerate(items, start=1):
        write_dicom(
            roi_dir / f"1.000000-ROI mask images-{series_counter}" / f"1-{k}.dcm",
            arr,
            header=roi_header,
            series_uid=roi_series,
            sop_uid=_uid(spec.seed, roi_id, kind, "sop"),
            instance=k,
        )
    return f"{roi_series}/000000.dcm", f"{roi_series}/000001.dcm"


def _write_roi(
    out: Path,
    spec: PhantomSpec,
    rng: np.random.Generator,
    image: _Mammogram,
    roi_id: str,
    mask: np.ndarray,
    patch: np.ndarray,
    series_counter: int,
) -> tuple[str, str, int]:
    """Write one abnormality's ROI study (mask and cropped patch); return its (crop path, mask
    path) as the mass CSVs spell them and the advanced series counter."""
    roi_study = _uid(spec.seed, roi_id, "study")
    roi_header = dict(
        image.header,
        PatientID=roi_id,
        StudyInstanceUID=roi_study,
        SeriesDescription="ROI mask images",
    )
    roi_dir = out / "CBIS-DDSM" / roi_id / f"{image.date}-DDSM-NA-{int(rng.integers(10000, 99999))}"
    series_counter += int(rng.integers(1, 50))
    if rng.random() < 0.07:  # mask and patch in two single-file series
        crop, mask_file = _write_roi_two_series(
            roi_dir, spec, roi_id, roi_header, mask, patch, series_counter
        )
    else:  # one series, mask and patch in no fixed order
        crop, mask_file = _write_roi_one_series(
            roi_dir, spec, rng, roi_id, roi_header, mask, patch, series_counter
        )
    # The trailing newline inside the ROI-mask path is a quirk of the real mass CSVs.
    return f"{roi_id}/{roi_study}/{crop}", f"{roi_id}/{roi_study}/{mask_file}\n", series_counter


def _mass_row(
    rng: np.random.Generator,
    p: _CbisPatient,
    view: str,
    abn: int,
    m: Mass,
    image_path: str,
    crop_path: str,
    mask_path: str,
) -> list:
    """One mass case-description row; draws its BI-RADS assessment and subtlety."""
    assessment = int(rng.integers(2, 5)) if m.label == 1 else int(rng.integers(4, 6))
    subtlety = int(rng.integers(1, 6))
    return [
        p.patient_id,
        p.density,
        p.side,
        view,
        abn,
        "mass",
        m.shape,
        m.margins,
        assessment,
        m.pathology,
        subtlety,
        image_path,
        crop_path,
        mask_path,
    ]


def _calc_row(spec: PhantomSpec, tag: str, p: _CbisPatient) -> list:
    """One calcification case-description row (no image is written for it)."""
    calc_id = f"Calc-{tag}_{p.patient_id}_{p.side}_CC"
    uid = _uid(spec.seed, calc_id)
    return [
        p.patient_id,
        p.density,
        p.side,
        "CC",
        1,
        "calcification",
        "PLEOMORPHIC",
        "CLUSTERED",
        4,
        "MALIGNANT",
        3,
        f"{calc_id}/{uid}/{uid}.1/000000.dcm",
        f"{calc_id}_1/{uid}/{uid}.2/000001.dcm\n",
        f"{calc_id}_1/{uid}/{uid}.2/000000.dcm",
    ]


def _cbis_view(
    out: Path,
    spec: PhantomSpec,
    rng: np.random.Generator,
    p: _CbisPatient,
    tag: str,
    view: str,
    series_counter: int,
) -> tuple[list[list], int]:
    """Write one view's mammogram and its ROI studies; return its mass rows and the advanced
    series counter."""
    image_id = f"Mass-{tag}_{p.patient_id}_{p.side}_{view}"
    img, breast = breast_image(rng, spec.height, spec.width, p.side, view, p.density)
    masks = _render_masses(rng, img, breast, p.masses, spec.width)
    pix = _to_uint16(img, rng)
    image, series_counter = _write_mammogram(out, spec, rng, p, view, image_id, pix, series_counter)
    rows = []
    for abn, (m, core) in enumerate(zip(p.masses, masks, strict=True), start=1):
        mask = _roi_mask(rng, core, spec)
        patch = _cropped_patch(pix, core)
        crop_path, mask_path, series_counter = _write_roi(
            out, spec, rng, image, f"{image_id}_{abn}", mask, patch, series_counter
        )
        rows.append(_mass_row(rng, p, view, abn, m, image.path, crop_path, mask_path))
    return rows, series_counter


def _cbis_cohort(
    out: Path,
    spec: PhantomSpec,
    portion: str,
    n_patients: int,
    first_pid: int,
    rng: np.random.Generator,
) -> tuple[list[list], list[list], int]:
    """Write one CBIS-DDSM portion (Training/Test); return (mass rows, calc rows, last patient
    number). Patients of the two portions are disjoint, as in the real collection."""
    tag = "Training" if portion == "train" else "Test"
    mass_rows, calc_rows = [], []
    pid = first_pid
    series_counter = int(rng.integers(10000, 20000))
    for _ in range(n_patients):
        p = _draw_cbis_patient(rng, pid)
        pid = p.pid
        for view in ("CC", "MLO"):
            rows, series_counter = _cbis_view(out, spec, rng, p, tag, view, series_counter)
            mass_rows += rows
        if rng.random() < 0.3:  # calcification rows: present in the metadata, ignored by design
            calc_rows.append(_calc_row(spec, tag, p))
    if portion == "train" and mass_rows:
        mass_rows.insert(1, list(mass_rows[0]))  # a duplicated row, as in real metadata exports
    return mass_rows, calc_rows, pid


@dataclass(frozen=True)
class _BcdrPatient:
    """A phantom BCDR patient: one study of one breast with one mass."""

    patient: int
    study: int
    side: str
    density: int
    age: int
    label: int  # 1 benign, 0 malignant
    mass: Mass


def _draw_bcdr_patient(rng: np.random.Generator, last_patient: int) -> _BcdrPatient:
    """Draw the patient after number ``last_patient``."""
    patient = last_patient + int(rng.integers(1, 4))  # unique, sparse ids as in the published set
    study = int(rng.integers(1, 9))
    side = str(rng.choice(["LEFT", "RIGHT"]))
    density = int(rng.integers(1, 5))
    age = int(rng.integers(38, 82))
    label = int(rng.random() < 0.56)  # BCDR's benign share (620 / 1106)
    m = draw_mass_class(rng, label, "BENIGN" if label else "MALIGNANT", scale=0.8)
    return _BcdrPatient(patient, study, side, density, age, label, m)


def _bcdr_image_path(p: _BcdrPatient, code: int) -> str:
    """The TIFF's path under the dataset folder, as the outlines CSV spells it."""
    view_name = BCDR_VIEW_NAMES[code]
    return f"patient_{p.patient}/study_{p.study}/img_{p.patient}_{p.study}_1_{view_name}.tif"


def _outline_points(core: np.ndarray) -> tuple[str, str]:
    """The largest contour of ``core`` as BCDR's space-led ``lw_x_points``/``lw_y_points``."""
    contours, _ = cv2.findContours(core, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    poly = max(contours, key=cv2.contourArea).reshape(-1, 2)
    xs = " " + " ".join(str(int(x)) for x in poly[:, 0])
    ys = " " + " ".join(str(int(y)) for y in poly[:, 1])
    return xs, ys


def _bcdr_row(p: _BcdrPatient, code: int, rel: str, xs: str, ys: str) -> list:
    """One mass outline row of ``bcdr_d01_outlines.csv``."""
    return [
        p.patient,
        p.study,
        1,
        1,
        code,
        code,
        f" {rel}",
        xs,
        ys,
        1,
        1,
        0,
        0,
        0,
        0,
        0,
        p.age,
        f" {p.density}",
        " Benign" if p.label else " Malign",
    ]


def _bcdr_calc_row(p: _BcdrPatient) -> list:
    """A calcification-only outline row on the patient's MLO image (the last one written)."""
    code = BCDR_VIEWS[(p.side, "MLO")]
    return [
        p.patient,
        p.study,
        1,
        2,
        9,
        code,
        f" {_bcdr_image_path(p, code)}",
        " 10 12 14",
        " 10 14 10",
        1,
        0,
        1,
        0,
        0,
        0,
        0,
        p.age,
        f" {p.density}",
        " Benign",
    ]


def _bcdr_view(
    rng: np.random.Generator, root: Path, p: _BcdrPatient, view: str, h: int, w: int
) -> list:
    """Render and write one view's TIFF with the patient's mass; return its outline row."""
    code = BCDR_VIEWS[(p.side, view)]
    img, breast = breast_image(rng, h, w, p.side, view, p.density, tex_scale=1.6)
    m = p.mass
    cx, cy = _place(rng, breast, margin=int(m.radius * 2.5) + 10)
    core = render_mass(rng, img, cx, cy, m, m.contrast * 0.85)  # lower contrast: shift
    # Domain shift: digital-detector tone curve, lifted background, coarser noise.
    img = np.clip(0.06 + 0.94 * img**0.8 + 0.02 * rng.standard_normal(img.shape), 0, 1)
    rel = _bcdr_image_path(p, code)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / rel), (img * 255).astype(np.uint8))
    xs, ys = _outline_points(core)
    return _bcdr_row(p, code, rel, xs, ys)


def _bcdr_cohort(out: Path, spec: PhantomSpec, rng: np.random.Generator) -> list[list]:
    """Write the BCDR-format external set: 8-bit TIFF, other size, tone and texture."""
    root = out / "BCDR" / "BCDR-D01_dataset"
    root.mkdir(parents=True, exist_ok=True)
    h, w = int(spec.height * 0.75), int(spec.width * 0.8)
    rows = []
    patient = 0
    for _ in range(spec.patients_external):
        p = _draw_bcdr_patient(rng, patient)
        patient = p.patient
        for view in ("CC", "MLO"):
            rows.append(_bcdr_view(rng, root, p, view, h, w))
        if rng.random() < 0.2:  # a calcification-only outline: not a mass, must be ignored
            rows.append(_bcdr_calc_row(p))
    with open(root / "bcdr_d01_outlines.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(BCDR_HEADER)
        wr.writerows(rows)
    return rows


def _write_case_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\r\n")  # TCIA's files use CRLF
        wr.writerow(header)
        wr.writerows(rows)


def generate(out_dir: str | Path, spec: PhantomSpec) -> dict:
    """Write the whole phantom cohort to ``out_dir`` (atomically); return counts."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        rng = np.random.default_rng(spec.seed)
        train_mass, train_calc, last = _cbis_cohort(tmp, spec, "train", spec.patients_train, 0, rng)
        test_mass, test_calc, _ = _cbis_cohort(tmp, spec, "test", spec.patients_test, last, rng)
        meta = tmp / "metadata"
        meta.mkdir()
        _write_case_csv(meta / CASE_CSVS["mass_train"], MASS_HEADER, train_mass)
        _write_case_csv(meta / CASE_CSVS["mass_test"], MASS_HEADER, test_mass)
        _write_case_csv(meta / CASE_CSVS["calc_train"], CALC_HEADER, train_calc)
        _write_case_csv(meta / CASE_CSVS["calc_test"], CALC_HEADER, test_calc)
        bcdr_rows = _bcdr_cohort(tmp, spec, rng)
    counts = {
        "mass_rows_train": len(train_mass),
        "mass_rows_test": len(test_mass),
        "calc_rows": len(train_calc) + len(test_calc),
        "bcdr_rows": len(bcdr_rows),
        "dicom_files": sum(1 for _ in out_dir.rglob("*.dcm")),
    }
    log.info("phantom cohort written to %s: %s", out_dir, counts)
    return counts
