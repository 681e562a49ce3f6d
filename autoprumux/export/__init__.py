"""Export a configuration as a deployable directory (`export_model`), chosen explicitly or from
a study (`from_trial`, `from_budget`), and register it in MLflow as a pyfunc
(`register_export`). The directory is loaded by `autoprumux.deploy.load`, which needs none of
this package.

Names are imported on first use, so the served model's code file imports only the pyfunc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprumux._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "ExportResult": "autoprumux.export._build",
        "check_model_format": "autoprumux.export._build",
        "check_out_dir": "autoprumux.export._build",
        "export_model": "autoprumux.export._build",
        "ExportSource": "autoprumux.export._source",
        "StudyChoice": "autoprumux.export._source",
        "from_budget": "autoprumux.export._source",
        "from_trial": "autoprumux.export._source",
        "ExportedModel": "autoprumux.export._pyfunc",
        "register_export": "autoprumux.export._pyfunc",
        "registered_name": "autoprumux.export._pyfunc",
    },
)

if TYPE_CHECKING:
    from autoprumux.export._build import (
        ExportResult,
        check_model_format,
        check_out_dir,
        export_model,
    )
    from autoprumux.export._pyfunc import ExportedModel, register_export, registered_name
    from autoprumux.export._source import ExportSource, StudyChoice, from_budget, from_trial

__all__ = [
    "ExportResult",
    "ExportSource",
    "ExportedModel",
    "StudyChoice",
    "check_model_format",
    "check_out_dir",
    "export_model",
    "from_budget",
    "from_trial",
    "register_export",
    "registered_name",
]
