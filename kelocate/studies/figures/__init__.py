"""Every figure of kelocate in one folder and one self-contained HTML report (`make_figures`)."""

from kelocate.studies.figures.run import make_figures
from kelocate.studies.figures.sections import FiguresRun, FiguresSettings

__all__ = ["FiguresRun", "FiguresSettings", "make_figures"]
