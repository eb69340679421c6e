"""Serving: the trained model as an MLflow pyfunc (HTTP via ``mlflow models serve``), its logging and
registration, and ``deunet models`` (the shipped models).

The request carries a NIfTI cine (4D, or 3D = one frame) or a zip of DICOM as bytes; the answer carries
the label map as NIfTI bytes and the clinical read-out (volume curves, ED/ES, EF, EDV, ESV, myocardial
mass, quality control). The bytes are decoded by :mod:`pipeline.data.image_bytes`, the read-out is
:mod:`pipeline.clinical`'s, and the local CLI that gives the same read-out (``deunet predict``) is
:mod:`pipeline.inference.predict_cli`. Nothing in this package opens a path that came from a client.
"""
