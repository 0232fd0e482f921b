"""The report's sections, one builder each: ``builder(run: RunData) -> Section``.

A builder whose inputs are missing returns a section with a "not run" note naming the files it
looked for and the stage that writes them; it never raises for a missing file.

One module per section, in the report's order: :mod:`.summary` (1), :mod:`.results` (2, the
tables, and 3, the box plots), :mod:`.examples` (4, Figure 5), :mod:`.qc` (5), :mod:`.realism`,
:mod:`.statistics` (6), :mod:`.provenance` (7, configuration and provenance); :mod:`.parts` holds
what they share.
"""

from __future__ import annotations

from .examples import examples_section
from .provenance import config_section
from .qc import qc_section
from .realism import realism_section
from .results import boxplots_section, tables_section
from .statistics import statistics_section
from .summary import summary_section

SECTIONS = (summary_section, tables_section, boxplots_section, examples_section, qc_section, realism_section,
            statistics_section, config_section)

__all__ = ["SECTIONS", "boxplots_section", "config_section", "examples_section", "qc_section", "realism_section",
           "statistics_section", "summary_section", "tables_section"]
