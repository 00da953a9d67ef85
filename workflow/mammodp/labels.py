"""What tables, figures and report captions call the data they were computed on.

Pure Python (no pandas, numpy or torch): the rules import it to fill the report captions. A
phantom run is never labelled "CBIS-DDSM test": the phantom only has the CBIS-DDSM and BCDR file
formats, not their patients.
"""

from __future__ import annotations

from .errors import UserError

SOURCES = ("phantom", "processed", "tcia")

DATA_NAME = {
    "phantom": "a generated phantom cohort in CBIS-DDSM and BCDR format (no patient data)",
    "processed": "the study's published crops of CBIS-DDSM and BCDR (dataset16062024)",
    "tcia": "CBIS-DDSM rebuilt from the TCIA DICOM, with BCDR as the external test set",
}
TEST_TITLES = {
    "phantom": {
        "cbis-ddsm": "Phantom test (CBIS-DDSM format)",
        "bcdr": "Phantom external (BCDR format)",
    },
    "processed": {
        "cbis-ddsm": "CBIS-DDSM test (published crops)",
        "bcdr": "External test (BCDR, published crops)",
    },
    "tcia": {
        "cbis-ddsm": "CBIS-DDSM test (rebuilt from DICOM)",
        "bcdr": "External test (BCDR)",
    },
}
TRAIN_TITLE = {
    "phantom": "phantom training crops",
    "processed": "published CBIS-DDSM training crops",
    "tcia": "CBIS-DDSM training crops (rebuilt from DICOM)",
}
GENERATOR_TITLE = {
    "mcgan": "MCGAN trained here",
    "medigan": "medigan model",
    "published": "the study's published samples",
}


def _check(source: str) -> str:
    if source not in SOURCES:
        raise UserError(
            f"data source {source!r} is unknown; data.source must be one of {', '.join(SOURCES)}"
        )
    return source


def set_titles(source: str) -> dict[str, str]:
    """Test-set key (cbis-ddsm, bcdr) -> the title naming the data it holds."""
    return dict(TEST_TITLES[_check(source)])


def data_labels(source: str, generator: str) -> dict[str, str]:
    """The names the report captions use (``snakemake.params.labels``)."""
    titles = set_titles(source)
    return {
        "source": source,
        "data": DATA_NAME[source],
        "cbis": titles["cbis-ddsm"],
        "external": titles["bcdr"],
        "train": TRAIN_TITLE[source],
        "synthetic": GENERATOR_TITLE.get(generator, generator),
    }
