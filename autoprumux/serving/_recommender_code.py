"""The code MLflow runs to load the registered recommender ("models from code").

`register_recommender` logs this file as the pyfunc's `python_model`, so no pickled Python
object is written: the model's state is data (JSON and LightGBM text models) that
`RecommenderModel.load_context` reads and checks. `autoprumux serve` executes a model's copy
of this file only when it is byte-identical to this one (see `_pyfunc.verify_model_dir`).
"""

import mlflow

from autoprumux.serving._pyfunc import RecommenderModel

mlflow.models.set_model(RecommenderModel())
