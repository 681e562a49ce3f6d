"""What serves the recommender: `autoprumux serve` and the MLflow model it loads.

`_pyfunc` stores the `Recommender` (from `autoprumux.meta`) as an MLflow pyfunc model made of
data, registers it, and checks a downloaded one before anything in it is loaded
(`verify_model_dir`); `_recommender_code` is the code file MLflow runs to load it; `_server`
serves it behind a request guard, with the connection cap and header deadline of `_connections`.
Its modules import MLflow, uvicorn and h11; the CLI imports them only for `autoprumux serve`.
"""
