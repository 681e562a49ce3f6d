"""The code MLflow runs to load a registered export ("models from code"): `register_export`
logs this file as the pyfunc's `python_model`, so no pickled Python object is written; the
model's state is the export directory, read by `ExportedModel.load_context`."""

import mlflow

from autoprumux.export._pyfunc import ExportedModel

mlflow.models.set_model(ExportedModel())
