"""The KLoB study: how consistent, relevant and unbiased a locator is, as RSim curves over its top-k layers
(the comprehensive study's Figure 8). `study.py` runs a locator over KLoB-c, KLoB-r and KLoB-u data (read
by `kelocate.data.klob`; the organism's own export is `kelocate.organism.datasets.organism_klob_dir`) and
scores it with `kelocate.probes.klob`; the figures are drawn by `kelocate.plots.klob`."""
