"""Linear contextual bandits on joint context-action features: LinUCB and linear Thompson sampling.

A reward is modelled as ``r(x, a) = theta . phi(x, a)`` with ``phi(x, a) = psi(a) (x) [x, 1]``, the
Kronecker product of the action's features ``psi(a)`` and the context with an intercept, where
``psi(a) = [1, contact, channel one-hot, content one-hot, slot one-hot]``. The leading 1 is a
*baseline* block shared by every action, no contact included, so the other blocks learn the
**uplift** of contacting over not contacting: a customer's organic revenue never looks like the
effect of a message. Scores of all actions are ``X~ Theta^T Psi^T``, cheap for any catalogue.
On a plain K-action space (:meth:`nba.actions.ActionSpace.plain`) ``psi(a) = [1, one-hot of a]``: a
model shared by every arm plus each arm's own, the ridge penalty pulling arms towards the shared one.

**Catalogues.** Index one-hots give an offer added to the catalogue no weight, and tie a policy to its
catalogue. Built with a :class:`nba.catalogue.Catalogue` (``create("linucb", catalogue.space, dim=d,
catalogue=catalogue)``), a learner scores actions by their features instead: ``psi(a) = [1,
catalogue.matrix[a]]``, i.e. ``[1, contact, channel one-hot, slot one-hot, encoded offer features]`` on a
structured space, ``[1, (contact,) encoded features]`` on a plain one. The encoding is frozen with the
catalogue, so the size of ``phi`` does not depend on which offers there are: ``policy.with_catalogue(new)``
re-encodes ``new`` the policy's way and gives a learner on its space that keeps ``A``, ``b``, ``theta``,
the reward moments (``sigma``) and, for LinTS, its samples and generator. A new offer is scored, and
explored (its width ``phi^T A^-1 phi`` is large where its features are new), from what offers like it
taught; a retired one is not in the new space. The catalogue is saved with the learner (its data in the
JSON parameters, its matrix among the arrays); without one, nothing changes.

Both learners share one ridge regression (:class:`Ridge`): ``A = lambda I + sum phi phi^T`` and
``b = sum r phi``, accumulated in blocks (a batch adds ``x x^T`` per distinct action to the
(g, h) blocks of that action's active features; the rows of small batches reach ``A`` together,
in one product, when ``A`` is next read). Both read ``A^-1``, kept up to date at the cost of the
batch's size, not of ``A``'s cube: a batch of ``k <= D / 8`` rows is a rank-``k`` Woodbury update
(``O(k D^2)``; one row, Sherman-Morrison), a larger one refactorises (Cholesky; the inverse is
computed from the factor when next read, so a learner fed only large batches never computes it).
Every ``D`` rows folded in incrementally, the inverse is recomputed from ``A``, so rounding cannot
accumulate; between two such refreshes it matches a fresh solve to about 1e-12
(``tests/nba/test_linear.py``).

* :class:`LinUCB` picks ``argmax theta.phi + alpha * sigma * sqrt(phi^T A^-1 phi)`` (exact width).
* :class:`LinTS` keeps ``n_samples`` posterior samples ``theta + v * sigma * A^-1 W`` and its
  distribution is the exact share of them under which each action wins. ``W`` (D x M) are perturbed
  right-hand sides with ``W ~ N(0, A)`` column by column, so each deviation ``A^-1 W`` is ``N(0,
  A^-1)``, a draw from the ridge posterior. They are drawn afresh, ``W = L Z`` (``A = L L^T``, ``Z``
  standard normals), whenever the inverse is recomputed from ``A``: at every large batch and every
  ``D`` rows. Between two such draws each row ``phi`` learnt one at a time adds ``phi e^T`` (``e``,
  ``M`` standard normals), which keeps ``W ~ N(0, A)`` as ``A`` grows, and ``A^-1 W`` moves with the
  inverse at ``O(D M)`` a row: the perturbed-observation form of ensemble sampling (Lu & Van Roy,
  2017), exact for rows the samples did not choose, approximate for the rows they did until the next
  fresh draw. So a decision learnt one at a time costs ``M`` normals and ``O(D M)`` beside LinUCB's,
  where redrawing at every update would cost ``D M`` normals and a triangular solve. Every normal comes
  from the policy's own seeded generator (results do not depend on the BLAS build). A few contexts
  are scored through ``A^-1 W`` directly, more through the samples' score matrix, built once per
  update (the same numbers, summed in another order).

``sigma`` is the running standard deviation of observed rewards, so ``alpha`` and ``v`` are unitless.

**BLAS threads.** The matrices here are small (273 x 273 for 10 actions and 20 features): a BLAS
thread team costs more to wake than it saves, and on a busy machine a second OpenBLAS thread spins
against other processes (a 273 x 273 Cholesky: 64 ms on two threads of a loaded 2-core machine, 1 ms
on one). So every public method that computes runs with :data:`BLAS_THREADS` BLAS threads
(threadpoolctl, restored on return), and the default configuration is the fast one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from scipy.linalg.blas import dger, dtrsm
from scipy.linalg.lapack import dpotrf, dpotri, dpotrs

from nba.actions import ActionSpace
from nba.catalogue import Catalogue
from nba.policies.base import check_update, checked, greedy, share_of_argmax

BLAS_THREADS = 1  # BLAS threads inside the linear learners' methods (module docstring)
WOODBURY_SHARE = 8  # a batch of at most D / WOODBURY_SHARE rows updates A^-1 by Woodbury
SMALL_BATCH = 16  # contexts up to which Ridge.pairs reads A^-1 directly (more: through a cached layout)
SAMPLE_BYTES = 1 << 26  # LinTS: bytes of (M, rows, A) sampled scores built at a time (bounded whatever the batch)
WIDTH_BYTES = 1 << 27  # LinUCB: bytes of a chunk's width temporaries (A^-1's pairs of blocks read at x) at most


# ----------------------------------------------------------------------------- BLAS threads
@functools.cache
def _blas_thread_calls() -> tuple[tuple[Callable[[], int], Callable[[int], Any]], ...]:
    """(get, set) of the thread count of every BLAS library loaded (NumPy's and SciPy's OpenBLAS), found once.

    threadpoolctl finds the libraries; for an OpenBLAS on its own threads its C functions are called
    directly (well under a microsecond), since ``threadpool_limits`` inspects the loaded libraries on every
    call (about 0.7 ms) and its controllers' ``set_num_threads`` keep thread bookkeeping (about 8
    microseconds a call).
    """
    from threadpoolctl import ThreadpoolController

    out = []
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api != "blas":
            continue
        calls = (lib.get_num_threads, lib.set_num_threads)
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") == "pthreads":
            symbol = getattr(lib, "_get_symbol", lambda name: None)
            get, set_ = symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")
            if get is not None and set_ is not None:
                calls = (get, set_)
        out.append(calls)
    return tuple(out)


def pinned_blas(method):
    """Run ``method`` with :data:`BLAS_THREADS` BLAS threads, restoring each library's own count after.

    The setting is process-wide, as OpenBLAS's is: BLAS calls made meanwhile by other threads run on as
    many threads too (slower at worst, never wrong).
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        changed = []
        for get, set_ in _blas_thread_calls():
            n = get()
            if n != BLAS_THREADS:
                set_(BLAS_THREADS)
                changed.append((set_, n))
        try:
            return method(*args, **kwargs)
        finally:
            for set_, n in changed:
                set_(n)

    return wrapper


# ----------------------------------------------------------------------------- action features
def action_design(space: ActionSpace, catalogue: Catalogue | None = None) -> np.ndarray:
    """(A, 1 + d_a) action features with the always-on baseline column first: ``[1, space.features()]``, or
    with a catalogue (of this space), ``[1, catalogue.matrix]``."""
    features = space.features() if catalogue is None else catalogue.matrix
    return np.hstack([np.ones((space.n_actions, 1), np.float64), features.astype(np.float64)])


# ----------------------------------------------------------------------------- ridge
class Ridge:
    """Ridge statistics over phi(x, a) = psi(a) (x) [x, 1], kept in (group, context) blocks, with ``A^-1`` kept
    up to date incrementally (module docstring). Rows folded in incrementally reach ``A`` itself when it is
    next read (one matrix product for all of them instead of a pass over ``A`` per row).

    Given a generator ``normals``, it also keeps ``samples`` perturbed right-hand sides ``W`` (D, M) with
    ``W ~ N(0, A)`` column by column, and their solutions ``A^-1 W ~ N(0, A^-1)`` (``deviation``): drawn
    afresh whenever the inverse is recomputed from ``A`` (:meth:`_factorise`), moved by ``phi e^T`` for
    every row folded in incrementally (``e``, M standard normals from ``normals``): LinTS's samples.
    """

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        lam: float = 1.0,
        catalogue: Catalogue | None = None,
        normals: np.random.Generator | None = None,
        samples: int = 0,
    ) -> None:
        if lam <= 0:
            raise ValueError(f"lam: must be > 0, got {lam!r}")
        self.space, self.dim, self.lam = space, dim, lam
        self.psi = action_design(space, catalogue)
        self.binary = bool(np.isin(self.psi, (0.0, 1.0)).all())  # one-hots: A gains whole blocks (_add_blocks)
        self.dx = dim + 1
        self.da = self.psi.shape[1]
        self.size = self.da * self.dx
        # the (g, h) block pairs, g <= h, that some action's width reads (psi_g psi_h != 0 for some action; with
        # index one-hots, 176 of the quickstart's 441), and each action's weight on them: psi_g psi_h, twice off
        # the diagonal, so that phi^T A^-1 phi = sum over pairs of weight * x^T (A^-1)_{gh} x
        g, h = np.triu_indices(self.da)
        products = self.psi[:, g] * self.psi[:, h]  # (A, da (da + 1) / 2)
        used = np.flatnonzero(np.any(products != 0.0, axis=0))
        self._pair_g, self._pair_h = g[used], h[used]
        self._pair_weights = np.ascontiguousarray((products[:, used] * np.where(g[used] == h[used], 1.0, 2.0)).T)
        self._A = lam * np.eye(self.size)
        self._pending: list[np.ndarray] = []  # (k, D) rows phi already in b and the inverse, not in A
        self.b = np.zeros(self.size)
        self.n = 0
        self.reward_sum = 0.0
        self.reward_sq = 0.0
        self.since = 0  # rows folded into the inverse since it was last computed from A
        self._inverse: np.ndarray | None = None  # A^-1, kept up to date once read (computed from _factor)
        self._factor: np.ndarray | None = None  # A's Cholesky factor, while no row has been folded in since
        # A^-1 W (D, M) for perturbed right-hand sides W, kept when ``normals`` (their generator) is given
        self._normals = normals
        self.deviation: np.ndarray | None = None if normals is None else np.zeros((self.size, samples))
        self._pair_layout: np.ndarray | None = None
        self._theta_psi: np.ndarray | None = None
        self.theta = np.zeros(self.size)
        self._factorise()

    @property
    def A(self) -> np.ndarray:
        """``lambda I + sum phi phi^T`` over every row seen."""
        if self._pending:
            rows = np.concatenate(self._pending)
            self._pending = []
            self._A += rows.T @ rows
        return self._A

    @A.setter
    def A(self, value: np.ndarray) -> None:
        self._A, self._pending = value, []

    def _aug(self, X: np.ndarray) -> np.ndarray:
        """``[X, 1]`` as float64."""
        out = np.empty((X.shape[0], self.dx))
        out[:, :-1] = X
        out[:, -1] = 1.0
        return out

    @property
    def sigma(self) -> float:
        """Standard deviation of the rewards seen (1 before any)."""
        if self.n < 2:
            return 1.0
        var = (self.reward_sq - self.reward_sum**2 / self.n) / (self.n - 1)
        return float(np.sqrt(max(var, 1e-12)))

    # ---- the kept inverse
    @property
    def inverse(self) -> np.ndarray:
        """``A^-1``: computed from the factor when first read after a refactorisation (a learner fed only large
        batches never needs it), then kept up to date by every incremental update."""
        if self._inverse is None:
            if self._factor is None:
                self._factor = _cholesky(self.A)
            self._inverse = _inverse_of(self._factor)
        return self._inverse

    def _factorise(self, redraw: bool = True) -> None:
        """Factorise ``A`` and compute ``theta`` (the inverse when next read); with deviations kept (and
        ``redraw``), draw them afresh: ``W = L Z`` (``A = L L^T``, ``Z`` standard normals), so ``A^-1 W = L^-T Z``."""
        L = self._factor = _cholesky(self.A)
        self._inverse = None
        self.since = 0
        if self._normals is not None and self.deviation is not None and redraw:
            Z = self._normals.standard_normal(self.deviation.shape)
            self.deviation = np.ascontiguousarray(dtrsm(1.0, L, Z, lower=1, trans_a=1))  # L^T S = Z
        theta, info = dpotrs(L, self.b, lower=1)
        if info:
            raise np.linalg.LinAlgError(f"A: singular factor (LAPACK dpotrs info {info})")
        self.theta = theta
        self._changed()

    def _solve(self) -> None:
        """``theta`` from ``b`` and the kept inverse."""
        self.theta = self.inverse @ self.b
        self._changed()

    def _changed(self) -> None:
        """Forget what derives from the inverse and ``theta``."""
        self._pair_layout = self._theta_psi = None

    # ---- learning
    def add(self, X: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Fold a validated batch into ``A`` and ``b``, then into the inverse and the deviations if kept."""
        Xa = self._aug(X)
        k = len(rewards)
        self.n += k
        self.reward_sum += float(rewards.sum())
        self.reward_sq += float((rewards**2).sum())
        if k > self.size // WOODBURY_SHARE or self.since + k > self.size:
            self._add_blocks(Xa, actions, rewards)
            self._factorise()
            return
        S, noise = self.deviation, None
        if S is not None and self._normals is not None:
            noise = self._normals.standard_normal((k, S.shape[1]))
        phi = (self.psi[actions][:, :, None] * Xa[:, None, :]).reshape(k, -1)  # (k, D) rows phi(x, a)
        inverse = self.inverse  # read (so computed) before the factor goes stale
        self._factor = None
        self._pending.append(phi)
        self.since += k
        if k == 1:  # Sherman-Morrison, and theta moved along A^-1 phi by the residual
            inv = inverse  # updated in place
            u = inv @ phi[0]
            s = 1.0 + float(phi[0] @ u)
            residual = float(rewards[0]) - float(phi[0] @ self.theta)
            if S is not None and noise is not None:  # W += phi e^T: A^-1 W moves by A'^-1 phi (e - phi^T S)
                self.deviation = dger(1.0 / s, noise[0] - phi[0] @ S, u, a=S.T, overwrite_a=1).T  # in place
            dger(-1.0 / s, u, u, a=inv.T, overwrite_a=1)  # symmetric: its .T is Fortran order
            self.b += float(rewards[0]) * phi[0]
            self.theta = self.theta + (residual / s) * u
            self._changed()
        else:
            if S is not None and noise is not None:  # W += phi^T e: S' = S + U (I + phi U)^-1 (e - phi S)
                U = inverse @ phi.T
                S += U @ np.linalg.solve(np.eye(k) + phi @ U, noise - phi @ S)
            _woodbury(inverse, phi)
            self.b += phi.T @ rewards
            self._solve()

    def _add_blocks(self, Xa: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """``A += sum phi phi^T``, ``b += sum r phi`` by blocks, from each distinct action's ``x x^T``: added to
        the (g, h) blocks of its active features where ``psi`` is 0/1 (index one-hots), else weighted by
        ``psi_g psi_h`` for every action at once, in one product (a catalogue's real-valued features)."""
        A4 = self.A.reshape(self.da, self.dx, self.da, self.dx)
        b2 = self.b.reshape(self.da, self.dx)
        acts = np.unique(actions)
        grams = np.empty((len(acts), self.dx, self.dx))
        sums = np.empty((len(acts), self.dx))
        for i, a in enumerate(acts):
            rows = actions == a
            xs = Xa[rows]
            grams[i] = xs.T @ xs
            sums[i] = xs.T @ rewards[rows]
        if not self.binary:
            W = self.psi[acts]  # (U, da)
            WW = (W[:, :, None] * W[:, None, :]).reshape(len(acts), -1)  # (U, da * da)
            blocks = (WW.T @ grams.reshape(len(acts), -1)).reshape(self.da, self.da, self.dx, self.dx)
            A4 += blocks.transpose(0, 2, 1, 3)
            b2 += W.T @ sums
            return
        for i, a in enumerate(acts):
            groups = np.flatnonzero(self.psi[a])
            for g in groups:
                b2[g] += sums[i]
                for h in groups:
                    A4[g, :, h, :] += grams[i]

    # ---- predictions
    def scores(self, X: np.ndarray) -> np.ndarray:
        """(N, A) predicted reward of every action."""
        return self._aug(X) @ self.theta_psi

    @property
    def theta_psi(self) -> np.ndarray:
        """(dx, A) ``Theta^T Psi^T``: ``[x, 1] @ theta_psi`` scores every action (cached until the next update)."""
        if self._theta_psi is None:
            self._theta_psi = self.theta.reshape(self.da, self.dx).T @ self.psi.T
        return self._theta_psi

    def widths(self, X: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(N, A) sqrt(phi^T A^-1 phi) for every action, exactly."""
        return self.widths_aug(self._aug(X), chunk)

    def widths_aug(self, Xa: np.ndarray, chunk: int = 256) -> np.ndarray:
        """:meth:`widths` of contexts already carrying their intercept, ``Xa = [X, 1]``."""
        n_actions, pairs = self.space.n_actions, len(self._pair_g)
        out = np.empty((Xa.shape[0], n_actions))
        chunk = max(1, min(chunk, WIDTH_BYTES // (8 * (pairs * self.dx + pairs + n_actions))))  # large catalogues
        for s in range(0, Xa.shape[0], chunk):
            out[s : s + chunk] = self.pairs(Xa[s : s + chunk]) @ self._pair_weights
        return np.sqrt(np.maximum(out, 0.0))

    def pairs(self, Xa: np.ndarray) -> np.ndarray:
        """(N, P) ``x^T (A^-1)_{gh} x`` for contexts ``Xa = [X, 1]`` and the P block pairs ``g <= h`` some
        action's width reads, so that ``phi^T A^-1 phi`` is their sum weighted by ``psi_g psi_h`` (twice off the
        diagonal; :meth:`widths_aug`). A few contexts read ``A^-1`` in place; more go through a cached layout of
        those blocks."""
        da, dx, n = self.da, self.dx, Xa.shape[0]
        if n <= SMALL_BATCH:
            z = (self.inverse.reshape(-1, dx) @ Xa.T).reshape(da, dx, da, n)  # [g, i, h, n] = A^-1[(g, i), h-block] x_n
            return np.einsum("pin,ni->np", z[self._pair_g, :, self._pair_h, :], Xa)
        y = (Xa @ self._pairs_laid_out()).reshape(n, -1, dx)
        return np.einsum("npj,nj->np", y, Xa)

    def _pairs_laid_out(self) -> np.ndarray:
        """The (g, h) blocks of A^-1 that :meth:`pairs` reads, laid out (dx, P * dx), cached until the next update."""
        if self._pair_layout is None:
            blocks = self.inverse.reshape(self.da, self.dx, self.da, self.dx)[self._pair_g, :, self._pair_h, :]
            self._pair_layout = np.ascontiguousarray(blocks.transpose(1, 0, 2)).reshape(self.dx, -1)
        return self._pair_layout

    # ---- state
    def arrays(self) -> dict[str, np.ndarray]:
        """``A``, ``b``, the reward moments and the deviations if kept; after incremental updates, also the
        kept inverse, ``theta`` and the rows folded in since, so that a loaded learner continues bit for bit."""
        out = {"A": self.A, "b": self.b, "reward_moments": np.array([self.n, self.reward_sum, self.reward_sq])}
        if self.deviation is not None:
            out["deviation"] = self.deviation
        if self.since:
            out["incremental_rows"] = np.array([self.since])
            out["kept"] = self.inverse
            out["theta"] = self.theta
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back the statistics :meth:`arrays` gave (ValueError naming ``A`` for another size, and the
        deviations where this ridge keeps them and ``arrays`` has none of their shape)."""
        A = np.array(arrays["A"], np.float64)
        if A.shape != (self.size, self.size):
            raise ValueError(
                f"A: expected shape {(self.size, self.size)} (the action and context features' size), got {A.shape}"
            )
        saved = None
        if self.deviation is not None:
            S = arrays.get("deviation")
            if S is None or np.shape(S) != self.deviation.shape:
                raise ValueError(
                    f"deviation: expected shape {self.deviation.shape}, got {'none' if S is None else np.shape(S)} "
                    "(a LinTS saved before it kept deviations: train it again)"
                )
            saved = np.array(S, np.float64)
        self.A = A
        self.b = np.array(arrays["b"], np.float64)
        n, s, sq = arrays["reward_moments"]
        self.n, self.reward_sum, self.reward_sq = int(n), float(s), float(sq)
        if "kept" not in arrays:
            self._factorise(redraw=False)
        else:
            kept = np.array(arrays["kept"], np.float64)
            if kept.shape != self.A.shape:
                raise ValueError(f"kept: expected shape {self.A.shape}, got {kept.shape}")
            self._inverse, self._factor = kept, None
            self.since = int(np.asarray(arrays["incremental_rows"]).ravel()[0])
            self.theta = np.array(arrays["theta"], np.float64)
            self._changed()
        if saved is not None:
            self.deviation = saved


def _cholesky(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a symmetric positive definite ``A`` (Fortran order)."""
    L, info = dpotrf(A.T, lower=1, clean=1)  # A is symmetric: A.T is the same matrix in Fortran order
    if info:
        raise np.linalg.LinAlgError(f"A: not positive definite (LAPACK dpotrf info {info})")
    return L


def _inverse_of(L: np.ndarray) -> np.ndarray:
    """``(L L^T)^-1``, symmetric and C-ordered, from a lower Cholesky factor."""
    inv, info = dpotri(L, lower=1)
    if info:
        raise np.linalg.LinAlgError(f"A: singular factor (LAPACK dpotri info {info})")
    inv = np.tril(inv)
    inv += np.tril(inv, -1).T
    return np.ascontiguousarray(inv)


def _woodbury(inverse: np.ndarray, phi: np.ndarray) -> None:
    """In place: ``inverse <- (inverse^-1 + phi^T phi)^-1`` for ``phi`` (k, D), in O(k D^2)."""
    u = inverse @ phi.T  # (D, k)
    C = np.linalg.cholesky(np.eye(phi.shape[0]) + phi @ u)
    V = np.linalg.solve(C, u.T)  # (k, D): V^T V = u (I + phi u)^-1 u^T
    inverse -= V.T @ V


def score_matrix(samples: np.ndarray, psi: np.ndarray, dx: int) -> np.ndarray:
    """(dx, M, A) array ``G``: ``[x, 1] @ G[:, m, :]`` scores every action under sample ``m`` of ``samples`` (M, D)."""
    T = samples.reshape(samples.shape[0], psi.shape[1], dx)  # (m, g, i)
    return np.ascontiguousarray(np.matmul(psi, T).transpose(2, 0, 1))  # (i, m, a)


def sample_scores(Xa: np.ndarray, G: np.ndarray) -> np.ndarray:
    """(M, N, A) scores of every action under each sample, for contexts ``Xa`` (N, dx) and ``G`` of
    :func:`score_matrix`."""
    dx, m, a = G.shape
    return (Xa @ G.reshape(dx, m * a)).reshape(-1, m, a).transpose(1, 0, 2)


def _check_catalogue(space: ActionSpace, catalogue: Catalogue | None) -> None:
    """Refuse a catalogue of another action space (ValueError naming ``catalogue``)."""
    if catalogue is not None and (not isinstance(catalogue, Catalogue) or catalogue.space != space):
        raise ValueError(
            "catalogue: expected the nba.catalogue.Catalogue of the policy's action space "
            "(create(name, catalogue.space, dim=..., catalogue=catalogue))"
        )


def _state_with_catalogue(
    catalogue: Catalogue | None, params: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A learner's saved state, with its catalogue's data (JSON) and matrix (array) where it has one."""
    if catalogue is None:
        return params, arrays
    return {**params, "catalogue": catalogue.to_dict()}, {**arrays, "catalogue": np.asarray(catalogue.matrix)}


def _catalogue_of_state(space: ActionSpace, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """A copy of ``params`` with their saved catalogue data, if any, rebuilt as a
    :class:`~nba.catalogue.Catalogue` of ``space``."""
    params = dict(params)
    if "catalogue" in params:
        params["catalogue"] = Catalogue.from_dict(space, params["catalogue"], arrays.get("catalogue"))
    return params


def _moved(policy, catalogue: Catalogue):
    """``policy`` rebuilt on ``catalogue`` (re-encoded under the policy's encoding) from its own state."""
    if policy.catalogue is None:
        raise ValueError(
            f"catalogue: this {policy.name} scores actions by their index (it was built without a "
            "catalogue), so it cannot move to another catalogue"
        )
    if not isinstance(catalogue, Catalogue):
        raise ValueError(f"catalogue: expected an nba.catalogue.Catalogue, got {type(catalogue).__name__}")
    catalogue = catalogue.with_encoding(policy.catalogue.encoding)
    params, arrays, models = policy.get_state()
    params, arrays = _state_with_catalogue(catalogue, params, arrays)
    return type(policy).from_state(catalogue.space, params, arrays, models)


class LinUCB:
    """Upper confidence bound on the joint linear model (deterministic: propensity 1 on its choice)."""

    name: ClassVar[str] = "linucb"

    @pinned_blas
    def __init__(
        self, space: ActionSpace, dim: int, alpha: float = 1.0, lam: float = 1.0, catalogue: Catalogue | None = None
    ) -> None:
        if alpha < 0:
            raise ValueError(f"alpha: must be >= 0, got {alpha!r}")
        _check_catalogue(space, catalogue)
        self.space, self.dim, self.alpha, self.catalogue = space, dim, alpha, catalogue
        self.ridge = Ridge(space, dim, lam, catalogue=catalogue)

    @pinned_blas
    def scores(self, X: np.ndarray) -> np.ndarray:
        """(N, A) estimated expected reward of every action."""
        return self.ridge.scores(X)

    @pinned_blas
    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) probability 1 on each row's eligible action of highest upper confidence bound
        (estimate + ``alpha * sigma *`` its confidence width)."""
        r = self.ridge
        Xa = r._aug(X)
        return greedy(Xa @ r.theta_psi + self.alpha * r.sigma * r.widths_aug(Xa), mask)

    @pinned_blas
    def update(self, X, actions, rewards, propensities=None) -> LinUCB:
        """Add the batch to the ridge regression (its inverse kept up to date). Returns self."""
        self.ridge.add(*check_update(self.space, self.dim, X, actions, rewards, propensities))
        return self

    def with_catalogue(self, catalogue: Catalogue) -> LinUCB:
        """A LinUCB on ``catalogue``'s space that keeps all this one learnt (module docstring, *Catalogues*)."""
        return _moved(self, catalogue)

    def get_state(self):
        """(``dim``, ``alpha``, ``lam`` and the catalogue if any; the ridge's arrays; no models)."""
        params = {"dim": self.dim, "alpha": self.alpha, "lam": self.ridge.lam}
        return (*_state_with_catalogue(self.catalogue, params, self.ridge.arrays()), {})

    @classmethod
    @pinned_blas
    def from_state(cls, space, params, arrays, models):
        """The LinUCB :meth:`get_state` described, its ridge regression restored."""
        policy = cls(space, **_catalogue_of_state(space, params, arrays))
        policy.ridge.restore(arrays)
        return policy


class LinTS:
    """Linear Thompson sampling on ``n_samples`` perturbed posterior samples kept up to date (module
    docstring): exact propensities, the share of samples under which each action wins."""

    name: ClassVar[str] = "lints"

    @pinned_blas
    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        v: float = 0.5,
        lam: float = 1.0,
        n_samples: int = 32,
        seed: int = 0,
        catalogue: Catalogue | None = None,
    ) -> None:
        if v < 0:
            raise ValueError(f"v: must be >= 0, got {v!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples: must be >= 1, got {n_samples!r}")
        _check_catalogue(space, catalogue)
        self.space, self.dim, self.v, self.n_samples, self.seed = space, dim, v, n_samples, seed
        self.catalogue = catalogue
        self.rng = np.random.default_rng(seed)
        self.ridge = Ridge(space, dim, lam, catalogue=catalogue, normals=self.rng, samples=n_samples)
        self._G: np.ndarray | None = None

    @property
    def deviation(self) -> np.ndarray:
        """(D, M) ``A^-1 W``: the samples' deviations from ``theta`` before their scale ``v * sigma``."""
        dev = self.ridge.deviation
        if dev is None:  # perturbed from the constructor on
            raise RuntimeError("LinTS's ridge keeps no deviations")
        return dev

    @property
    def samples(self) -> np.ndarray:
        """(M, D) the posterior samples ``theta + v * sigma * A^-1 W``."""
        r = self.ridge
        return r.theta + (self.v * r.sigma) * self.deviation.T

    def _few(self, n: int) -> bool:
        """Whether ``n`` contexts cost less scored through the deviations (``M (D + A d_a)`` each) than through
        the samples' score matrix (``M A d_x`` each, once it is built for ``M A D``; kept until the next update)."""
        r, a = self.ridge, self.space.n_actions
        return self._G is None and n * (r.size + a * r.da - a * r.dx) < a * r.size

    def _sample_scores(self, Xa: np.ndarray, G: np.ndarray | None) -> np.ndarray:
        """(M, N, A) every action's score under each sample, for contexts ``Xa = [X, 1]``: through the score
        matrix ``G`` if given, else through the deviations."""
        r, m = self.ridge, self.n_samples
        if G is not None:
            return sample_scores(Xa, G)
        # x through the deviations laid out (dx, da * M), then the action features: (M, N, A)
        dev = self.deviation.reshape(r.da, r.dx, m).transpose(1, 0, 2).reshape(r.dx, -1)
        noise = np.matmul((Xa @ dev).reshape(-1, r.da, m).transpose(2, 0, 1), r.psi.T)
        noise *= self.v * r.sigma
        noise += Xa @ r.theta_psi
        return noise

    @pinned_blas
    def scores(self, X: np.ndarray) -> np.ndarray:
        """(N, A) estimated expected reward of every action (the posterior mean)."""
        return self.ridge.scores(X)

    @pinned_blas
    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) the share of the ``n_samples`` posterior samples under which each eligible action scores best."""
        r = self.ridge
        Xa = r._aug(X)
        n, a = Xa.shape[0], self.space.n_actions
        if not self._few(n) and self._G is None:
            self._G = score_matrix(self.samples, r.psi, r.dx)
        G = self._G
        # the (M, N, A) scores a chunk of contexts at a time: memory stays bounded for large batches (an
        # evaluation log of 100,000 contexts would otherwise build 5.8 GB of them at 32 samples x 225 actions)
        step = max(1, SAMPLE_BYTES // (8 * self.n_samples * a))
        if n <= step:
            return share_of_argmax(self._sample_scores(Xa, G), mask)
        out = np.empty((n, a))
        for start in range(0, n, step):
            rows = slice(start, start + step)
            out[rows] = share_of_argmax(self._sample_scores(Xa[rows], G), mask[rows])
        return out

    @pinned_blas
    def update(self, X, actions, rewards, propensities=None) -> LinTS:
        """Add the batch to the ridge regression; the samples move with the posterior (drawn afresh when the
        ridge refactorises, perturbed row by row between). Returns self."""
        self.ridge.add(*check_update(self.space, self.dim, X, actions, rewards, propensities))
        self._G = None
        return self

    def get_state(self):
        """(parameters, the generator's state and the catalogue if any; the ridge's arrays, its deviations
        included; no models)."""
        params: dict[str, Any] = {
            "dim": self.dim,
            "v": self.v,
            "lam": self.ridge.lam,
            "n_samples": self.n_samples,
            "seed": self.seed,
        }
        state = self.rng.bit_generator.state
        params["rng_state"] = {
            "bit_generator": state["bit_generator"],
            "state": {k: str(v) for k, v in state["state"].items()},
            "has_uint32": state["has_uint32"],
            "uinteger": str(state["uinteger"]),
        }
        return (*_state_with_catalogue(self.catalogue, params, self.ridge.arrays()), {})

    def with_catalogue(self, catalogue: Catalogue) -> LinTS:
        """A LinTS on ``catalogue``'s space that keeps all this one learnt, its samples and generator included
        (module docstring, *Catalogues*)."""
        return _moved(self, catalogue)

    @classmethod
    @pinned_blas
    def from_state(cls, space, params, arrays, models):
        """The LinTS :meth:`get_state` described: same ridge and samples, same generator state."""
        params = _catalogue_of_state(space, params, arrays)
        rng_state = params.pop("rng_state")
        policy = cls(space, **params)
        policy.ridge.restore(arrays)
        policy.rng.bit_generator.state = {
            "bit_generator": rng_state["bit_generator"],
            "state": {k: int(v) for k, v in rng_state["state"].items()},
            "has_uint32": rng_state["has_uint32"],
            "uinteger": int(rng_state["uinteger"]),
        }
        return policy
