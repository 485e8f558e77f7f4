"""The model stage: scaled customer features -> clusters at a chosen k, with the diagnostics behind the choice.

Rooms, from the bottom up: `fit` (the fit record), `metrics` (adjusted Rand index, Calinski-Harabasz,
Davies-Bouldin), `knee` (the knee of a cost curve), `engine/` (the k sweep's engine, replaying Spark ML's
KMeans for every k at once), `kmeans` (the KMeans sweep and the published model), `methods` (bisecting KMeans
and Gaussian mixtures), `selection` (diagnostics per k, vetoes, the choice of k, the method comparison).
"""
