"""pstune/gp_sampler.py: Bayesian optimisation with a Gaussian-process prior, as an Optuna sampler.

Optuna 3.1 (Debian's python3-optuna) ships random, TPE, CMA-ES, QMC and NSGA-II samplers but no
Gaussian-process one; `GPSampler` adds it over scikit-learn's GaussianProcessRegressor:

    import optuna
    from pstune.gp_sampler import GPSampler

    study = optuna.create_study(direction="maximize", sampler=GPSampler(seed=1))
    study.optimize(objective, n_trials=40)

How it samples (relative sampling over Optuna's IntersectionSearchSpace):
  - The first `n_startup_trials` trials (counting the ones it learns from, see below) are drawn
    at random by an Optuna RandomSampler with the same seed; so is every parameter outside the
    intersection search space (conditional parameters: `sample_independent`).
  - Each parameter maps to [0, 1]: floats linearly or, for log distributions, in log space;
    integers and stepped floats over [low - step/2, high + step/2] (so every value owns an equal
    share) and are rounded to their grid; categoricals one-hot (one column per choice).
    Distributions with a single value are left to Optuna.
  - The model: GaussianProcessRegressor with ConstantKernel * Matern(nu=2.5, one length scale
    per column) + WhiteKernel (the merits are noisy), normalize_y, a few optimizer restarts.
    Targets are minimised internally (a maximised study's values are negated).
  - The acquisition: expected improvement (closed form) over the best observed value, maximised
    over random candidates plus Gaussian perturbations of the best observed points and of the
    best candidates; every candidate is snapped to the parameters' grids before it is scored.
  - Trials running at the same time (pstune runs G at once) enter the model at the mean the GP
    predicts for them ("kriging believer"), so parallel trials do not all get the same point.
  - A point already tried (or running) is not proposed again while the candidates hold an
    untried one; once a discrete space is exhausted the best candidate by expected improvement
    is returned anyway (a re-measurement).

Which trials it learns from: COMPLETE trials with their value; PRUNED trials, when
`consider_pruned_trials` (the default), with their last intermediate value. A pruned trial was
stopped because its reports were poor, and its last report is the best evidence of how poor: for
a merit that improves with training (validation accuracy) it is a pessimistic figure, which keeps
the search away from regions the pruner already rejected. FAIL trials are ignored (Optuna's
built-in samplers do the same). A non-finite value counts as the worst finite one seen.

Thread safety: like Optuna's samplers, one instance serves one study; Optuna calls it from the
thread that asks for a trial. It holds no lock: concurrent asks from several threads of one
process must be serialised by the caller (pstune asks from one thread).
"""

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import BaseSampler, IntersectionSearchSpace, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

_logger = optuna.logging.get_logger(__name__)


class _Encoder:
    """Maps parameter dicts of one search space to points of the unit cube and back.

    Columns follow the sorted parameter names; a categorical takes one column per choice.
    """

    def __init__(self, search_space: Dict[str, BaseDistribution]):
        self.names = sorted(search_space)
        self.dists = [search_space[n] for n in self.names]
        # (first column, column count) per parameter.
        self.slices: List[Tuple[int, int]] = []
        col = 0
        for d in self.dists:
            width = len(d.choices) if isinstance(d, CategoricalDistribution) else 1
            self.slices.append((col, width))
            col += width
        self.dim = col
        # Per numeric parameter: (low, high) of the interval [0, 1] maps onto, in the
        # (possibly log) space where the mapping is linear.
        self._ranges: List[Optional[Tuple[float, float]]] = []
        for d in self.dists:
            if isinstance(d, CategoricalDistribution):
                self._ranges.append(None)
                continue
            half = 0.0
            if isinstance(d, IntDistribution):
                half = 0.5 * d.step
            elif d.step is not None:
                half = 0.5 * d.step
            lo, hi = d.low - half, d.high + half
            if d.log:
                # Log ints have step 1 and low >= 1, so lo >= 0.5 > 0; log floats have low > 0.
                lo, hi = math.log(lo), math.log(hi)
            self._ranges.append((lo, hi))

    def _numeric_to_unit(self, i: int, value: float) -> float:
        d = self.dists[i]
        lo, hi = self._ranges[i]
        x = math.log(value) if d.log else float(value)
        return 0.0 if hi == lo else (x - lo) / (hi - lo)

    def _unit_to_numeric(self, i: int, u: np.ndarray) -> np.ndarray:
        """Unit coordinates -> values on the parameter's grid (vectorised)."""
        d = self.dists[i]
        lo, hi = self._ranges[i]
        x = lo + np.clip(u, 0.0, 1.0) * (hi - lo)
        if d.log:
            x = np.exp(x)
        step = d.step if isinstance(d, IntDistribution) else d.step
        if step is not None:
            x = d.low + np.round((x - d.low) / step) * step
        return np.clip(x, d.low, d.high)

    def encode(self, params: Dict[str, Any]) -> np.ndarray:
        row = np.zeros(self.dim)
        for i, (name, d) in enumerate(zip(self.names, self.dists)):
            start, width = self.slices[i]
            if isinstance(d, CategoricalDistribution):
                row[start + d.to_internal_repr(params[name])] = 1.0
            else:
                row[start] = self._numeric_to_unit(i, params[name])
        return row

    def snap(self, points: np.ndarray) -> np.ndarray:
        """Moves points to the nearest encodable ones: numeric columns onto their grids,
        categorical blocks to one-hot (the largest column wins)."""
        out = np.empty_like(points)
        for i, d in enumerate(self.dists):
            start, width = self.slices[i]
            if isinstance(d, CategoricalDistribution):
                block = np.zeros((len(points), width))
                block[np.arange(len(points)), np.argmax(points[:, start:start + width], 1)] = 1
                out[:, start:start + width] = block
            else:
                values = self._unit_to_numeric(i, points[:, start])
                lo, hi = self._ranges[i]
                x = np.log(values) if d.log else values
                out[:, start] = 0.0 if hi == lo else (x - lo) / (hi - lo)
        return out

    def decode(self, point: np.ndarray) -> Dict[str, Any]:
        params: Dict[str, Any] = {}
        for i, (name, d) in enumerate(zip(self.names, self.dists)):
            start, width = self.slices[i]
            if isinstance(d, CategoricalDistribution):
                params[name] = d.choices[int(np.argmax(point[start:start + width]))]
            else:
                value = float(self._unit_to_numeric(i, np.array([point[start]]))[0])
                params[name] = int(round(value)) if isinstance(d, IntDistribution) else value
        return params

    def random(self, rng: np.random.RandomState, n: int) -> np.ndarray:
        """n uniformly random points (categoricals: each choice equally likely)."""
        pts = rng.uniform(0.0, 1.0, (n, self.dim))
        return self.snap(pts)

    def perturb(self, rng: np.random.RandomState, centres: np.ndarray, n_each: int,
                scale: float) -> np.ndarray:
        """n_each Gaussian perturbations (std `scale` per numeric column) of every centre;
        each categorical switches to a random choice with probability `scale`."""
        pts = np.repeat(centres, n_each, axis=0)
        for i, d in enumerate(self.dists):
            start, width = self.slices[i]
            if isinstance(d, CategoricalDistribution):
                flip = rng.uniform(size=len(pts)) < scale
                new = rng.randint(0, width, size=len(pts))
                block = pts[:, start:start + width].copy()
                block[flip] = 0.0
                block[np.nonzero(flip)[0], new[flip]] = 1.0
                pts[:, start:start + width] = block
            else:
                pts[:, start] = np.clip(pts[:, start] + rng.normal(0.0, scale, len(pts)), 0, 1)
        return self.snap(pts)


def expected_improvement(mu: np.ndarray, sigma: np.ndarray, best: float,
                         xi: float = 0.0) -> np.ndarray:
    """Expected improvement below `best` (minimisation) of a Gaussian N(mu, sigma^2):
    (best - mu - xi) * Phi(z) + sigma * phi(z), z = (best - mu - xi) / sigma; where sigma is 0
    it is max(best - mu - xi, 0)."""
    improvement = best - mu - xi
    with np.errstate(divide="ignore", invalid="ignore"):
        z = improvement / sigma
        ei = improvement * norm.cdf(z) + sigma * norm.pdf(z)
    return np.where(sigma > 1e-12, np.maximum(ei, 0.0), np.maximum(improvement, 0.0))


class GPSampler(BaseSampler):
    """Gaussian-process Bayesian optimisation with expected improvement (see the module doc).

    Args:
        seed: seeds the candidates, the GP's optimizer restarts and the random startup trials;
            the same seed and the same trial results give the same suggestions.
        n_startup_trials: trials drawn at random before the GP takes over. Default 10.
        n_candidates: random candidates scored per suggestion. Default 2000.
        n_local: perturbations scored around each of the best observed points and best
            candidates. Default 100.
        n_restarts_optimizer: extra starts of the GP's kernel-hyperparameter fit. Default 3.
        consider_pruned_trials: learn from PRUNED trials with their last intermediate value.
            Default True.
        xi: exploration margin of expected improvement, in units of the observed values'
            standard deviation. Default 0.01.
        independent_sampler: for parameters outside the relative search space and for the
            startup trials. Default: RandomSampler(seed).
    """

    def __init__(self, seed: Optional[int] = None, n_startup_trials: int = 10,
                 n_candidates: int = 2000, n_local: int = 100, n_restarts_optimizer: int = 3,
                 consider_pruned_trials: bool = True, xi: float = 0.01,
                 independent_sampler: Optional[BaseSampler] = None) -> None:
        if n_startup_trials < 1:
            raise ValueError(f"GPSampler: n_startup_trials must be at least 1, got "
                             f"{n_startup_trials}")
        if n_candidates < 1 or n_local < 0 or n_restarts_optimizer < 0:
            raise ValueError("GPSampler: n_candidates must be >= 1, n_local and "
                             "n_restarts_optimizer >= 0")
        self._rng = np.random.RandomState(seed)
        self._n_startup_trials = n_startup_trials
        self._n_candidates = n_candidates
        self._n_local = n_local
        self._n_restarts = n_restarts_optimizer
        self._consider_pruned = consider_pruned_trials
        self._xi = xi
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._search_space = IntersectionSearchSpace(include_pruned=consider_pruned_trials)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._independent.reseed_rng()

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> Dict[str, BaseDistribution]:
        return {name: d for name, d in self._search_space.calculate(study).items()
                if not d.single()}

    def _observations(self, study: Study,
                      trial: FrozenTrial) -> Tuple[List[FrozenTrial], List[float]]:
        """The trials the model learns from and their values, as the study reports them
        (not yet negated for maximisation); see the module doc for which trials count."""
        trials, values = [], []
        for t in study.get_trials(deepcopy=False,
                                  states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.number == trial.number:
                continue
            if t.state == TrialState.COMPLETE:
                value = t.value
            elif self._consider_pruned and t.intermediate_values:
                value = t.intermediate_values[max(t.intermediate_values)]
            else:
                continue
            if value is None:
                continue
            trials.append(t)
            values.append(float(value))
        return trials, values

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: Dict[str, BaseDistribution]) -> Dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if not search_space:
            return {}
        observed, values = self._observations(study, trial)
        usable = [(t, v) for t, v in zip(observed, values)
                  if all(n in t.params for n in search_space)]
        if len(usable) < self._n_startup_trials:
            return {}
        enc = _Encoder(search_space)
        x = np.array([enc.encode(t.params) for t, _ in usable])
        y = np.array([v for _, v in usable], dtype=float)
        if study.direction == StudyDirection.MAXIMIZE:
            y = -y
        finite = np.isfinite(y)
        if not finite.any():
            return {}
        y[~finite] = y[finite].max()
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.number != trial.number and all(n in t.params for n in search_space)]
        x_running = np.array([enc.encode(t.params) for t in running]).reshape(-1, enc.dim)
        return enc.decode(self._propose(enc, x, y, x_running))

    def _fit(self, x: np.ndarray, y: np.ndarray, dim: int,
             kernel=None) -> GaussianProcessRegressor:
        if kernel is None:
            kernel = (ConstantKernel(1.0, (1e-3, 1e3))
                      * Matern(length_scale=np.full(dim, 0.5), length_scale_bounds=(1e-2, 1e2),
                               nu=2.5)
                      + WhiteKernel(1e-2, (1e-6, 1e0)))
            optimizer, restarts = "fmin_l_bfgs_b", self._n_restarts
        else:
            optimizer, restarts = None, 0  # keep the fitted hyperparameters
        gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, optimizer=optimizer,
                                      n_restarts_optimizer=restarts,
                                      random_state=self._rng.randint(2**31 - 1))
        with warnings.catch_warnings():
            # Hyperparameters at their bounds (a flat objective, few points) are expected.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            gp.fit(x, y)
        return gp

    def _propose(self, enc: _Encoder, x: np.ndarray, y: np.ndarray,
                 x_running: np.ndarray) -> np.ndarray:
        gp = self._fit(x, y, enc.dim)
        if len(x_running):
            # Kriging believer: running trials count as observed at the predicted mean.
            believed = gp.predict(x_running)
            gp = self._fit(np.vstack([x, x_running]), np.concatenate([y, believed]), enc.dim,
                           kernel=gp.kernel_)
        best = float(y.min())
        xi = self._xi * (float(y.std()) or 1.0)

        def score(points: np.ndarray) -> np.ndarray:
            mu, sigma = gp.predict(points, return_std=True)
            return expected_improvement(mu, sigma, best, xi)

        top = x[np.argsort(y, kind="stable")[:5]]
        candidates = [enc.random(self._rng, self._n_candidates)]
        if self._n_local:
            for scale in (0.2, 0.05):
                candidates.append(enc.perturb(self._rng, top, self._n_local, scale))
        cand = np.vstack(candidates)
        ei = score(cand)
        if self._n_local:
            # A second, finer round around the best candidates so far.
            best_cand = cand[np.argsort(-ei, kind="stable")[:5]]
            local = enc.perturb(self._rng, best_cand, self._n_local, 0.02)
            cand = np.vstack([cand, local])
            ei = np.concatenate([ei, score(local)])
        tried = np.vstack([x, x_running])
        order = np.argsort(-ei, kind="stable")
        for i in order:
            if not np.any(np.all(np.abs(tried - cand[i]) < 1e-9, axis=1)):
                return cand[i]
        _logger.info("GPSampler: every candidate has been tried; re-measuring the best one.")
        return cand[order[0]]

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name,
                                                     param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Optional[Sequence[float]]) -> None:
        self._independent.after_trial(study, trial, state, values)
