"""Clinical read-out of a segmented cine, shared by evaluation, inference (``deunet predict``) and serving.

Volumes, volume curves, ED/ES and the ACDC indices (``indices``), adult reference ranges
(``reference_ranges``), quality control of the labels (``quality_control``), the read-out of one cine
(``readout``) and its table columns (``readout_columns``), the per-case clinical report (``report``) and
its page (``report_html``), and the volume-curve figure (``curve_figure``). Pure functions on numpy arrays
in the ACDC conventions; they import only the data layer and the base modules (vocabulary, errors).
"""
