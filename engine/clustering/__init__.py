"""Clustering primitives the methods, the runs and the pages share: clustering metrics (:mod:`.metrics`),
k-nearest-neighbour mining (:mod:`.neighbors`) and K-means (:mod:`.kmeans`). They know nothing of methods, runs or
pages, so every layer above may use them."""
