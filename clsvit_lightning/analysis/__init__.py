"""Token-interaction analysis of a ViT backbone (the paper's measurements) and visual diagnostics.

``analyze_backbone(model, images)`` measures similarities around every norm, per-channel
magnitudes by token type, token norms and [CLS] attention (``recorder.py``, ``statistics.py``);
``make_figures`` / ``save_figures`` draw them (``figures.py``); ``load_images`` reads a folder of
pictures (``images.py``); ``save_report`` writes the JSON (keys documented in ``report.py``);
``analyze_and_save`` runs all of it and logs to loggers (``pipeline.py``); ``advise`` turns a
vanilla model's report into a ranked specialization proposal. Imports without Lightning.
"""

from clsvit_lightning.analysis.advisor import Advice, Candidate, advise
from clsvit_lightning.analysis.figures import figure_to_array, make_figures, pca_rgb, save_figures
from clsvit_lightning.analysis.images import find_images, load_image, load_images
from clsvit_lightning.analysis.pipeline import REPORT_FILE, analyze_and_save
from clsvit_lightning.analysis.recorder import SCHEMA_VERSION, TokenAnalysis, analyze_backbone
from clsvit_lightning.analysis.report import REPORT_KEYS, report_keys, save_report, scalar_summary

__all__ = [
    "REPORT_FILE",
    "REPORT_KEYS",
    "SCHEMA_VERSION",
    "Advice",
    "Candidate",
    "TokenAnalysis",
    "advise",
    "analyze_and_save",
    "analyze_backbone",
    "figure_to_array",
    "find_images",
    "load_image",
    "load_images",
    "make_figures",
    "pca_rgb",
    "report_keys",
    "save_figures",
    "save_report",
    "scalar_summary",
]
