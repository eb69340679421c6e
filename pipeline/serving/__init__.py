"""Serving: the trained model as an MLflow pyfunc (HTTP via ``mlflow models serve``) and a local CLI.

The request carries a NIfTI cine (4D, or 3D = one frame) as bytes; the answer carries the label map as
NIfTI bytes and the clinical read-out (volume curves, ED/ES, EF, EDV, ESV, myocardial mass). Nothing in
this package opens a path that came from a client.
"""
