"""Stage ``data`` (``workflow/rules/data.smk``): the cohorts, their lesion table, the mass crops
and the patient-level split.

Modules: ``phantom`` (the embedded demo cohort), ``tcia`` (CBIS-DDSM from TCIA), ``processed``
(the study's published crops), ``dicomio`` (DICOM reading), ``lesions`` (the lesion table),
``crops`` (mass crops) and ``split`` (train/val/test by patient).
"""

from mammodp.exports import lazy_exports

# name -> the module that defines it; imported on first use (mammodp.exports)
_EXPORTS = {
    "CROP_COLUMNS": "crops",
    "CropSpec": "crops",
    "LESION_COLUMNS": "lesions",
    "MANIFEST_COLUMNS": "split",
    "PhantomSpec": "phantom",
    "bcdr_lesions": "lesions",
    "cbis_lesions": "lesions",
    "download_batch": "tcia",
    "download_metadata": "tcia",
    "duplicate_report": "processed",
    "fetch_published": "processed",
    "import_processed": "processed",
    "list_series": "tcia",
    "make_crops": "crops",
    "make_split": "split",
    "study_split": "processed",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
