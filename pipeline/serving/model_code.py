"""MLflow "model from code" entry point: the served model is built from this file, not unpickled."""

from mlflow.models import set_model

from pipeline.serving.pyfunc_model import CineSegmentationModel

set_model(CineSegmentationModel())
