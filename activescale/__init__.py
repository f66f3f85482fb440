"""activescale: scaling-law studies of how much compute online active data selection saves.

This package is the layer every other one builds on: the error hierarchy
(:mod:`activescale.errors`) and the MLflow run schema (:mod:`activescale.schema`), the names
that the trainers write and the analysis reads. It imports nothing from the project's other
packages (``orchestrator``, ``trainers``, ``analysis``), which import it.
"""

from __future__ import annotations

__version__ = "0.2.0"
