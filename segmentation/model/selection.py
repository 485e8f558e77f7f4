"""Model stage, after the sweep: per-k diagnostics and a choice of k that can be trusted.

Takes the fits of the k sweep (any method: a fit function and the fitted model per k) and the scaled features,
and hands the segments stage the chosen k with its reason, plus one row of diagnostics per k for the `elbow`
table and the report: cost (WCSS or log-likelihood), silhouette (Spark ML ClusteringEvaluator),
Calinski-Harabasz and Davies-Bouldin (from per-cluster Spark aggregates: sizes, means, within-cluster sums),
cluster sizes, smallest cluster share, and stability (mean adjusted Rand index between fits with other seeds,
each from a contingency table counted in Spark). No step collects the customers to the driver.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.model.kmeans import fit_on_all, sweep_k
from segmentation.model.knee import knee_point, positive_gaps
from segmentation.model.methods import fit_method, sweep_method
from segmentation.model.metrics import adjusted_rand_index, cluster_metrics, total_sum_of_squares
from segmentation.model.sampled import DENSITY_METHODS, SAMPLED_METHODS

log = logging.getLogger(__name__)


#: fit(scaled_df, k, seed) -> a fitted Spark ML model whose transform adds the `cluster` column.
FitFunction = Callable[[DataFrame, int, int], Any]


@dataclass
class KDiagnostics:
    """Everything measured for one k."""

    k: int
    cost: float
    silhouette: float | None
    calinski_harabasz: float | None
    davies_bouldin: float | None
    cluster_sizes: list[int]
    smallest_cluster_share: float
    stability: float | None
    vetoes: list[str] = field(default_factory=list)


@dataclass
class KChoice:
    """The chosen k, why, and whether the data shows clear cluster structure at all."""

    k: int
    reason: str
    clear_structure: bool
    vetoed: dict[int, list[str]]


def stability(
    scaled_df: DataFrame,
    model: Any,
    k: int,
    seeds: list[int],
    fit: FitFunction,
    prediction_col: str = "cluster",
) -> float | None:
    """Mean adjusted Rand index over every pair of fits at this k: `model` and one fit per seed in `seeds`.

    Pairs (not only "against the first fit"), so one unlucky seed lowers the score without deciding it.
    """
    if not seeds:
        return None
    labelled = model.transform(scaled_df).select(*scaled_df.columns, F.col(prediction_col).alias("_a0"))
    for i, seed in enumerate(seeds, start=1):
        other = fit(scaled_df, k, seed)
        labelled = other.transform(labelled).select(
            *scaled_df.columns, *[f"_a{j}" for j in range(i)], F.col(prediction_col).alias(f"_a{i}")
        )
    labels_df = labelled.select(*[f"_a{j}" for j in range(len(seeds) + 1)]).cache()
    try:
        scores = [
            adjusted_rand_index(labels_df, f"_a{a}", f"_a{b}")
            for a in range(len(seeds) + 1)
            for b in range(a + 1, len(seeds) + 1)
        ]
    finally:
        labels_df.unpersist()
    return sum(scores) / len(scores)


def k_diagnostics(
    scaled_df: DataFrame,
    fits: list[Any],
    fit: FitFunction,
    seed: int,
    dim: int,
    stability_fits: int = 2,
    parallelism: int = 1,
) -> list[KDiagnostics]:
    """Diagnostics for every fit of the sweep (objects with `k`, `wcss` or `cost`, `silhouette`, `model`).

    Stability refits each k with seeds seed+1 .. seed+`stability_fits` (0 turns it off); k values are
    processed up to `parallelism` at a time and logged as "diagnostics k i of n".
    """
    done = 0
    lock = threading.Lock()
    extra_seeds = [seed + i for i in range(1, stability_fits + 1)]

    def one(f: Any) -> KDiagnostics:
        nonlocal done
        started = time.perf_counter()
        if f.method == "kmeans" and f.metrics is not None:  # measured by the KMeans sweep itself
            metrics, stab = f.metrics, f.stability
        else:
            # a sampled method's sweep measured the customers that are not noise
            metrics = f.metrics or cluster_metrics(f.model.transform(scaled_df), dim)
            stab = stability(scaled_df, f.model, f.k, extra_seeds, fit)
        diag = KDiagnostics(
            k=f.k,
            cost=float(f.cost) if hasattr(f, "cost") else float(f.wcss),
            silhouette=f.silhouette,
            calinski_harabasz=metrics["calinski_harabasz"],
            davies_bouldin=metrics["davies_bouldin"],
            cluster_sizes=metrics["cluster_sizes"],
            smallest_cluster_share=metrics["smallest_cluster_share"],
            stability=stab,
        )
        with lock:
            done += 1
            log.info(
                "diagnostics k %d of %d: k=%d CH=%s DB=%s smallest=%.1f%% stability=%s (%.1f s)",
                done,
                len(fits),
                f.k,
                _fmt(diag.calinski_harabasz, ".1f"),
                _fmt(diag.davies_bouldin, ".3f"),
                100 * diag.smallest_cluster_share,
                _fmt(stab, ".3f"),
                time.perf_counter() - started,
            )
        return diag

    if parallelism <= 1 or len(fits) == 1:
        return [one(f) for f in fits]
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="diagnostics") as pool:
        return list(pool.map(one, fits))


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def apply_vetoes(diags: list[KDiagnostics], min_cluster_share: float, min_stability: float) -> None:
    """Mark each k that has a cluster below `min_cluster_share` of the customers or stability below the bar."""
    for d in diags:
        d.vetoes = []
        if d.smallest_cluster_share < min_cluster_share:
            d.vetoes.append(f"smallest cluster {d.smallest_cluster_share:.1%} < {min_cluster_share:.1%}")
        if d.stability is not None and d.stability < min_stability:
            d.vetoes.append(f"stability {d.stability:.2f} < {min_stability:.2f}")
        if len(d.cluster_sizes) < d.k:
            d.vetoes.append(f"only {len(d.cluster_sizes)} of {d.k} clusters used")


def choose_k_robust(
    diags: list[KDiagnostics],
    fixed_k: int | None = None,
    min_cluster_share: float = 0.02,
    min_stability: float = 0.75,
    cost_name: str = "WCSS",
    decreasing: bool = True,
) -> KChoice:
    """The k to use and why (rules in docs/choosing-k.md).

    1. The knee of the cost curve (WCSS; for a log-likelihood, which rises, its negative).
    2. Vetoes: a k whose smallest cluster is below `min_cluster_share` or whose stability is below
       `min_stability` cannot win; the admissible k with the largest positive knee gap wins instead, else
       the admissible k with the highest silhouette.
    3. When no k is admissible, the knee (or best silhouette) is kept and the reason says every k was vetoed.
    `clear_structure` is provisional (the chosen k passes the vetoes); `with_structure` completes it.
    """
    apply_vetoes(diags, min_cluster_share, min_stability)
    by_k = {d.k: d for d in diags}
    vetoed = {d.k: list(d.vetoes) for d in diags if d.vetoes}
    ks = [d.k for d in diags]
    span = f"k={ks[0]}..{ks[-1]}" if len(ks) > 1 else f"k={ks[0]}"

    if fixed_k is not None:
        k = fixed_k
        reason = f"fixed k={fixed_k} (model.k / --k)"
        if k in vetoed:
            reason += f"; warning: {', '.join(vetoed[k])}"
    else:
        costs = [d.cost if decreasing else -d.cost for d in diags]
        positive = positive_gaps(ks, costs)
        knee, _ = knee_point(ks, costs)
        admissible = [d for d in diags if not d.vetoes]
        scored = [d for d in admissible if d.silhouette is not None]
        if knee is not None and knee not in vetoed:
            k = knee
            reason = (
                f"knee of the {cost_name} curve over {span}: largest normalised distance below the chord "
                f"({positive[knee]:.3f}); no veto"
            )
        else:
            lead = (
                f"the knee of the {cost_name} curve (k={knee}) is vetoed: {', '.join(vetoed[knee])}"
                if knee is not None
                else f"no knee in the {cost_name} curve over {span}"
            )
            candidates = [d.k for d in admissible if d.k in positive]
            if candidates:
                k = max(candidates, key=lambda c: (positive[c], -c))
                reason = (
                    f"{lead}; next point below the chord that passes the vetoes: k={k} ({positive[k]:.3f})"
                )
            elif scored:
                best = max(scored, key=lambda d: (d.silhouette, -d.k))
                k = best.k
                reason = f"{lead}; highest silhouette among k that pass the vetoes ({best.silhouette:.3f})"
            else:
                all_scored = [d for d in diags if d.silhouette is not None]
                if knee is not None:
                    k = knee
                elif all_scored:
                    k = max(all_scored, key=lambda d: (d.silhouette, -d.k)).k
                else:
                    k = ks[0]
                reason = f"{lead}; every k in {span} is vetoed, k={k} kept"
    clear = k in by_k and not by_k[k].vetoes
    return KChoice(k=k, reason=reason, clear_structure=clear, vetoed=vetoed)


#: cost(df, k, seed) -> the within-cluster sum of squares of a fit with k clusters on `df`'s `scaled` column.
CostFunction = Callable[[DataFrame, int, int], float]


def structure_gap(
    scaled_df: DataFrame, k: int, wcss: float, cost: CostFunction, seed: int, dim: int, partitions: int = 2
) -> float | None:
    """Gap of the data against a structureless reference at k (the gap statistic with one reference set).

    The reference is uniform in the bounding box of the scaled data, as many points, generated in Spark with
    a fixed seed (column `id` and `scaled`). gap = log(W_ref(k) / W(k)) - log(W_ref(1) / W(1)): how much more
    k clusters reduce the within-cluster sum of squares on the data than on featureless data of the same
    extent. About 0 or below: the k clusters are no better than cutting a uniform cloud (no clear structure).
    """
    n, w1, box = total_sum_of_squares(scaled_df, dim)
    if n <= k or w1 <= 0 or wcss <= 0:
        return None
    spark = scaled_df.sparkSession
    reference_df = spark.range(0, n, 1, partitions).select(
        "id",
        array_to_vector(
            F.array(*[F.lit(lo) + F.rand(seed + 1000 + i) * F.lit(hi - lo) for i, (lo, hi) in enumerate(box)])
        ).alias("scaled"),
    )
    reference_df = reference_df.cache()
    try:
        _, ref1, _ = total_sum_of_squares(reference_df, dim)
        ref_k = cost(reference_df, k, seed)
    finally:
        reference_df.unpersist()
    if not ref_k or ref1 <= 0:
        return None
    return math.log(ref_k / wcss) - math.log(ref1 / w1)


def with_structure(
    choice: KChoice,
    diags: list[KDiagnostics],
    gap: float | None,
    min_gap: float = 0.1,
    min_silhouette: float = 0.5,
) -> KChoice:
    """Decide whether the data shows clear cluster structure at the chosen k, and say so in the reason.

    Clear means all three: the chosen k passes the vetoes, its silhouette is at least `min_silhouette`
    (Kaufman and Rousseeuw: 0.5 and above is a reasonable structure), and its gap against a uniform
    reference is at least `min_gap` (a single round blob can reach a silhouette of 0.5; it has a gap <= 0).
    Otherwise the segments partition a continuum; they are not natural groups.
    """
    chosen = next((d for d in diags if d.k == choice.k), None)
    why = []
    sil = chosen.silhouette if chosen is not None else None
    if sil is None or sil < min_silhouette:
        why.append(f"silhouette {_fmt(sil, '.3f')} < {min_silhouette:.3f}")
    if gap is None or gap < min_gap:
        why.append(f"gap against a uniform reference {_fmt(gap, '.3f')} < {min_gap:.3f}")
    if chosen is not None and chosen.vetoes:
        why.append(", ".join(chosen.vetoes))
    if not why:
        reason = f"{choice.reason}; clear structure (silhouette {sil:.3f}, gap {gap:.3f})"
        return KChoice(choice.k, reason, True, choice.vetoed)
    reason = (
        f"{choice.reason}. No clear cluster structure ({'; '.join(why)}): the segments split a continuum, "
        "they are not natural groups"
    )
    return KChoice(choice.k, reason, False, choice.vetoed)


@dataclass
class Selection:
    """The sweep, its diagnostics and the choice, for one set of customers."""

    fits: list[Any]
    diagnostics: list[KDiagnostics]
    choice: KChoice
    gap: float | None = None

    @property
    def chosen(self) -> Any:
        return next(f for f in self.fits if f.k == self.choice.k)

    def outlier_clusters(self, min_cluster_share: float) -> list[int]:
        """Cluster indices of the chosen fit below `min_cluster_share`, when a tiny cluster vetoes that k."""
        diag = next(d for d in self.diagnostics if d.k == self.choice.k)
        if not any(v.startswith("smallest cluster") for v in diag.vetoes):
            return []
        sizes = list(self.chosen.cluster_sizes)
        total = sum(sizes)
        return [c for c, n in enumerate(sizes) if 0 < n < min_cluster_share * total]


def select_k(scaled_df: DataFrame, ks: list[int], model_cfg: dict[str, Any], dim: int) -> Selection:
    """Sweep k, measure every k (diagnostics), choose one and check the structure (docs/choosing-k.md).

    `model_cfg` holds the `model.*` config keys (seed, max_iter, tol, parallelism, partitions, k and the
    choice settings).
    """
    seed, max_iter, tol = int(model_cfg["seed"]), int(model_cfg["max_iter"]), float(model_cfg["tol"])
    parallelism = int(model_cfg["parallelism"])
    method = model_cfg.get("method", "kmeans")
    sample_size = model_cfg.get("sweep_sample") if method == "kmeans" and len(ks) > 1 else None
    fits = sweep_method(
        method,
        scaled_df,
        ks,
        seed,
        max_iter,
        tol,
        parallelism=parallelism,
        sample_size=sample_size,
        stability_fits=int(model_cfg["stability_fits"]),
        driver_max_rows=int(model_cfg["driver_sweep_max_rows"]),
        params=model_cfg,
    )

    def fit(df: DataFrame, k: int, s: int):
        return fit_method(method, df, k, s, max_iter, tol, model_cfg)

    def reference_cost(df: DataFrame, k: int, s: int) -> float:
        """W(k) of the gap's reference: KMeans by the sweep's engine (the data's own W(k) is its cost too; a
        sampled method's too, a conservative reference); the Spark ML methods' hard assignment from aggregates."""
        if method == "kmeans" or method in SAMPLED_METHODS:
            driver = int(model_cfg["driver_sweep_max_rows"])
            return sweep_k(df, [k], s, max_iter, tol, driver_max_rows=driver)[0].wcss
        return cluster_metrics(fit(df, k, s).transform(df), dim)["within"]

    diags = k_diagnostics(
        scaled_df,
        fits,
        fit,
        seed,
        dim,
        stability_fits=int(model_cfg["stability_fits"]),
        parallelism=parallelism,
    )
    density = method in DENSITY_METHODS
    choice = choose_k_robust(
        diags,
        fits[0].k if density else model_cfg["k"],
        min_cluster_share=model_cfg["min_cluster_share"],
        min_stability=model_cfg["min_stability"],
    )
    if density:  # the method found k itself; say so, with any veto as a warning
        found = fits[0]
        reason = (
            f"{method} finds k itself: {found.k} clusters on a seeded sample of {found.extra['fitted_on']:,} "
            f"customers; {found.extra['noise']:,} customers are noise"
        )
        warning = ", ".join(choice.vetoed.get(choice.k, []))
        choice = KChoice(
            choice.k,
            reason + (f"; warning: {warning}" if warning else ""),
            choice.clear_structure,
            choice.vetoed,
        )
    # the Spark ML model at the chosen k (the KMeans sweep keeps centers only; a sampled sweep refits on all)
    chosen = fit_on_all(scaled_df, next(f for f in fits if f.k == choice.k), seed, max_iter, tol)
    fits = [chosen if f.k == choice.k else f for f in fits]
    gap = structure_gap(
        scaled_df, choice.k, chosen.wcss, reference_cost, seed, dim, int(model_cfg["partitions"])
    )
    return Selection(
        fits,
        diags,
        with_structure(choice, diags, gap, model_cfg["min_gap"], model_cfg["min_silhouette"]),
        gap,
    )


def elbow_rows(selection: Selection, clustered: int) -> list[dict[str, Any]]:
    """One row per k for the `elbow` table: the sweep's columns plus the diagnostics and vetoes."""
    rows = []
    for f, d in zip(selection.fits, selection.diagnostics):
        rows.append(
            {
                "method": getattr(f, "method", "kmeans"),
                "log_likelihood": getattr(f, "log_likelihood", None),
                "k": f.k,
                "wcss": f.wcss,
                "silhouette": f.silhouette,
                "chosen": f.k == selection.choice.k,
                "smallest_cluster_share": min(d.cluster_sizes) / clustered if d.cluster_sizes else 0.0,
                "calinski_harabasz": d.calinski_harabasz,
                "davies_bouldin": d.davies_bouldin,
                "stability": d.stability,
                "cluster_sizes": [int(n) for n in d.cluster_sizes],
                "vetoes": "; ".join(d.vetoes) or None,
            }
        )
    return rows


def compare_methods(
    scaled_df: DataFrame, ks: list[int], model_cfg: dict[str, Any], dim: int, main: Selection, clustered: int
) -> tuple[dict[str, Selection], dict[str, Any]]:
    """`model.compare`: run the other listed methods on the same features and tabulate every method and k.

    Returns the selection per method (the configured method's is `main`) and, for the manifest and the
    report, `{"methods": {method: {chosen_k, reason, clear_structure}}, "rows": [...]}` with one row per
    method and k: silhouette, Calinski-Harabasz, Davies-Bouldin, cluster sizes, smallest cluster share,
    stability, vetoes and whether it is that method's choice.
    """
    selections = {model_cfg["method"]: main}
    for method in model_cfg["compare"]:
        if method not in selections:
            log.info("compare: %s", method)
            selections[method] = select_k(scaled_df, ks, {**model_cfg, "method": method}, dim)
    rows = []
    for method, sel in selections.items():
        for r in elbow_rows(sel, clustered):
            rows.append(
                {
                    "method": method,
                    "k": r["k"],
                    "silhouette": r["silhouette"],
                    "calinski_harabasz": r["calinski_harabasz"],
                    "davies_bouldin": r["davies_bouldin"],
                    "cluster_sizes": r["cluster_sizes"],
                    "smallest_cluster_share": r["smallest_cluster_share"],
                    "stability": r["stability"],
                    "wcss": r["wcss"],
                    "log_likelihood": r["log_likelihood"],
                    "vetoes": r["vetoes"],
                    "chosen": r["chosen"],
                }
            )
    summary = {
        method: {
            "chosen_k": sel.choice.k,
            "reason": sel.choice.reason,
            "clear_structure": sel.choice.clear_structure,
        }
        for method, sel in selections.items()
    }
    return selections, {"methods": summary, "rows": rows}
