"""The paper's reference numbers per network, read from the bundled paper_models.csv.

Source: A. Canziani, A. Paszke, E. Culurciello, "An Analysis of Deep Neural Network Models
for Practical Applications", arXiv:1605.07678v4 (2017): accuracy, G-Ops and M-params as
plotted in the paper's figures; exact parameter targets derived from the definitions used.
"""

import csv
import dataclasses
import functools
import importlib.resources
from typing import Optional


@dataclasses.dataclass(frozen=True)
class PaperReference:
    """What the paper reports for one network (accuracy is single-crop top-1 on ImageNet val)."""

    display_name: str
    family: str
    input_size: int
    top1_percent: float
    gops_paper: float
    params_m_paper: float
    params_exact_target: Optional[int]
    top1_source: str
    notes: str


@functools.cache
def paper_references() -> dict[str, PaperReference]:
    """Maps each network name to its paper reference, in the paper's order."""
    text = importlib.resources.files("models").joinpath("paper_models.csv").read_text()
    rows = {}
    for row in csv.DictReader(text.splitlines()):
        target = row["params_exact_target"]
        rows[row["name"]] = PaperReference(
            display_name=row["display_name"], family=row["family"], input_size=int(row["input_size"]),
            top1_percent=float(row["top1_percent"]), gops_paper=float(row["gops_paper"]),
            params_m_paper=float(row["params_m_paper"]),
            params_exact_target=int(target) if target else None,
            top1_source=row["top1_source"], notes=row["notes"])
    return rows
