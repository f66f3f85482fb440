"""An activescale plugin: a 1-D ResNet ladder (``arch: resnet1d``) and signals read from a CSV
file (``dataset: {name: csv_signals, path: FILE.csv}``). Importing the package registers both.

Load it from a sweep, ``plugins: [activescale_resnet1d/]`` (a path relative to the sweep file,
as ``examples/resnet1d_plugin/sweep.yaml`` does), or install it
(``pip install -e examples/resnet1d_plugin``): its entry point in ``activescale.plugins``
then loads it for every command.
"""

from __future__ import annotations

from . import data, models

__version__ = "0.1.0"
__all__ = ["data", "models"]
