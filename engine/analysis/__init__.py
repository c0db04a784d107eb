"""Analysis of finished runs for the pages and the command line: loading a run's results, per-cluster views, loss
curves, 2-D maps, thumbnails and export. The metrics and the neighbour mining they use are in
:mod:`engine.clustering`."""
