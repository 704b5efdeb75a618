"""The edge's scoring kernel: a preprocessing chain and the model's linear heads compiled into two matrix
products per batch, in float32, with per-spectrum scaling (SNV, MSC) applied algebraically around them.

Features after the chain are written symbolically as ``f = (X @ L + A @ C) / s``: X is the one array that is
actually materialised (raw counts, or absorbance), L the product of every linear step (reference
correction, Savitzky-Golay, detrending, range selection, resampling), A and s per-spectrum offsets and
scales produced by SNV/MSC, and C fixed offset vectors. Everything a scaling step needs (band sums, sums
of squares, dot products with its reference) and every head (PCA scores, class logits, class residual
directions, brand logits, the dot product with the PCA centre) is then a column of one matrix ``W``, so a
batch costs ``X @ W`` plus ``(X * X) @ G`` for the sums of squares. A chain that needs a sum of squares
after a non-diagonal linear step (for example SNV after a derivative) materialises the features there
and starts a new segment; that is slower but still exact.

Only numpy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spectral.preprocess import Step

NARROW_FEATURES = 64  # segments starting from at most this many features run in float64
BLOCK_ROWS = 2048  # 2048 x 224 float32 is 1.8 MB: the passes over a block run from cache


@dataclass
class Heads:
    """Linear read-outs of the final features f (bands_f): what the lane model computes from them."""

    mean: np.ndarray  # (bf,) PCA centre
    components: np.ndarray  # (k, bf)
    class_coef: np.ndarray  # (bf, C): logits = f @ class_coef + class_offset
    class_offset: np.ndarray  # (C,)
    residual_dirs: np.ndarray  # (bf, R): class residual projections = (f - mean) @ residual_dirs
    brand_coef: np.ndarray  # (bf, B)
    brand_offset: np.ndarray  # (B,)

    def matrix(self) -> np.ndarray:
        return np.hstack([self.components.T, self.class_coef, self.residual_dirs, self.brand_coef,
                          self.mean[:, None]])

    def sizes(self) -> tuple[int, int, int, int]:
        return (self.components.shape[0], self.class_coef.shape[1], self.residual_dirs.shape[1],
                self.brand_coef.shape[1])


@dataclass
class Outputs:
    """Per spectrum, in float64: PCA scores, Q, class logits, class residual projections, brand logits."""

    scores: np.ndarray
    q: np.ndarray
    logits: np.ndarray
    residual_proj: np.ndarray
    brand_logits: np.ndarray
    degenerate: np.ndarray  # bool: a scaling step met a flat spectrum (zero spread or zero slope)


def _diagonal_like(m: np.ndarray) -> bool:
    """Each output column takes exactly one input band and no band is used twice: sums of squares are cheap."""
    nz = m != 0
    return bool(np.all(nz.sum(axis=0) == 1) and np.all(nz.sum(axis=1) <= 1))


@dataclass
class _Op:
    kind: str  # center | snv | msc
    n_bands: int
    col_sum: int
    col_dot: list[int]  # snv: columns X @ (L C_r); msc: [column X @ (L rc)]
    g_col: int  # snv: column of G
    c_sum: np.ndarray  # C @ 1
    c_gram: np.ndarray | None = None  # snv: C @ C.T
    c_ref: np.ndarray | None = None  # msc: C @ rc
    ref_mean: float = 0.0
    rc_norm2: float = 1.0


@dataclass
class _Segment:
    source: str  # counts | log | features
    floor: float
    w: np.ndarray  # (bx, m) float32
    g: np.ndarray  # (bx, p) float32
    ops: list[_Op]
    c_init: np.ndarray  # (1, bf0) offset row of the constant A column
    # set on the last segment only:
    head_cols: slice | None = None
    c_head: np.ndarray | None = None  # (r, m_heads)
    norm_col: int = -1  # G column of ||X L||^2 at the end, or -1
    norm_dot_cols: list[int] | None = None  # columns X @ (L C_r) for the cross terms of ||f||^2
    norm_known: bool = False  # the chain ends in SNV: ||f||^2 = bands
    c_final: np.ndarray | None = None
    n_final: int = 0
    # set when this segment hands its features to the next one:
    l_out: np.ndarray | None = None
    c_out: np.ndarray | None = None
    # set on a last features segment without scaling steps: its input carries a trailing column of ones, and
    # w_heads_t (read-outs x features + 1) gives the read-outs, offsets included, in one matrix product
    w_heads_t: np.ndarray | None = None


class CompiledChain:
    """A chain plus heads compiled for one pair of dark/white references."""

    def __init__(self, steps: list[Step], heads: Heads, dark: np.ndarray, white: np.ndarray,
                 dtype: type = np.float32):
        self.dtype = dtype
        dark = np.asarray(dark, dtype=np.float64)
        white = np.asarray(white, dtype=np.float64)
        gain = 1.0 / (white - dark)  # reflectance = counts * gain + offset
        offset = -dark * gain
        self.n_bands = dark.size
        steps = list(steps)
        self.segments: list[_Segment] = []
        self._log_counts = bool(steps) and steps[0].kind == "absorbance"
        if self._log_counts:
            # X holds log10(max(counts - dark, floor * (white - dark))) = log10(max(R, floor)) + log10(white - dark):
            # the reference correction is a subtraction before the log and a constant after it, and the minus
            # sign of log10(1/R) lives in L; three passes over the batch instead of five.
            source, floor = "log", steps[0].floor
            self._dark_rows = np.tile(dark.astype(dtype), BLOCK_ROWS)  # the references repeated for a block
            self._floor_rows = np.tile((floor * (white - dark)).astype(dtype), BLOCK_ROWS)
            # A count this high is above the floor in every band, float32 rounding included: a block whose
            # smallest count reaches it skips the floor pass (a minimum over the raw counts costs a quarter).
            self._counts_above_floor = float(np.max(dark + floor * (white - dark))) + 1.0
            lin, cst = -np.eye(self.n_bands), np.log10(white - dark)[None, :]
            steps = steps[1:]
        else:
            source, floor = "counts", 0.0
            lin, cst = np.diag(gain), offset[None, :]
        self._compile(steps, heads, source, floor, lin, cst)

    # ------------------------------------------------------------ compile
    def _compile(self, steps, heads, source, floor, lin, cst):
        cols: list[np.ndarray] = []
        gcols: list[np.ndarray] = []
        ops: list[_Op] = []
        c_init = cst.copy()

        def col(v):
            cols.append(np.asarray(v, dtype=np.float64))
            return len(cols) - 1

        def gcol(v):
            gcols.append(np.asarray(v, dtype=np.float64))
            return len(gcols) - 1

        def close(**extra) -> _Segment:
            bx = lin.shape[0]
            w = np.stack(cols, axis=1) if cols else np.zeros((bx, 0))
            g = np.stack(gcols, axis=1) if gcols else np.zeros((bx, 0))
            # A segment that starts from a few materialised features (a DCT low-pass, say) is cheap in float64,
            # which keeps Q, a small difference of large sums of squares, exact when the features are tapered.
            dt = np.float64 if source == "features" and bx <= NARROW_FEATURES else self.dtype
            seg = _Segment(source, floor, w.astype(dt), g.astype(dt), ops, c_init, **extra)
            if seg.l_out is not None:  # the features this segment hands on come out of the same matrix product
                seg.w = np.hstack([seg.w, seg.l_out.astype(seg.w.dtype)])
            self.segments.append(seg)
            return seg

        ends_in_snv = False
        for i, step in enumerate(steps):
            if step.kind == "center" and _band_mixing_follows(steps[i + 1:]):
                # Centring is linear: folded into L it costs no column and no per-spectrum step. L stays
                # diagonal-like only without it, and a band-mixing step after it ends that anyway.
                centring = np.eye(lin.shape[1]) - 1.0 / lin.shape[1]
                lin = lin @ centring
                cst = cst @ centring
                continue
            if step.kind == "linear":
                lin = lin @ step.matrix
                cst = cst @ step.matrix
                ends_in_snv = False
                continue
            if step.kind == "absorbance" or (step.kind == "snv" and not _diagonal_like(lin)):
                close(l_out=lin, c_out=cst)
                nxt_source = "log" if step.kind == "absorbance" else "features"
                nf = lin.shape[1]
                rest = steps[i + 1:] if step.kind == "absorbance" else steps[i:]
                sign = -1.0 if nxt_source == "log" else 1.0
                self._compile(rest, heads, nxt_source, step.floor, sign * np.eye(nf), np.zeros((1, nf)))
                return
            bf = lin.shape[1]
            ones = np.ones(bf)
            if step.kind == "center":
                ops.append(_Op("center", bf, col(lin @ ones), [], -1, cst @ ones))
                ends_in_snv = False
            elif step.kind == "snv":
                ops.append(_Op("snv", bf, col(lin @ ones), [col(lin @ c) for c in cst],
                               gcol(np.sum(lin * lin, axis=1)), cst @ ones, c_gram=cst @ cst.T))
                ends_in_snv = True
            else:  # msc
                ref = np.asarray(step.reference, dtype=np.float64)
                rc = ref - ref.mean()
                ops.append(_Op("msc", bf, col(lin @ ones), [col(lin @ rc)], -1, cst @ ones, c_ref=cst @ rc,
                               ref_mean=float(ref.mean()), rc_norm2=float(rc @ rc)))
                ends_in_snv = False
            cst = np.vstack([cst, ones])
        hm = heads.matrix()
        if hm.shape[0] != lin.shape[1]:
            raise ValueError(f"the chain gives {lin.shape[1]} features; the model heads expect {hm.shape[0]}")
        norm_col = -1
        norm_dot_cols: list[int] = []
        if not ends_in_snv:
            if not _diagonal_like(lin):
                close(l_out=lin, c_out=cst)
                nf = lin.shape[1]
                self._compile([], heads, "features", 0.0, np.eye(nf), np.zeros((1, nf)))
                return
            norm_col = gcol(np.sum(lin * lin, axis=1))
            if ops or np.any(cst):  # the cross terms of |X L + A C|^2; none when the offsets are zero
                norm_dot_cols = [col(lin @ c) for c in cst]
        self._heads = heads
        self._sizes = heads.sizes()
        k, c, r, b = self._sizes
        mu_h = heads.mean @ hm
        # Added to f @ H: centres the PCA scores, residual projections and f.mu, and adds the logit offsets.
        self._head_offset = np.concatenate([-mu_h[:k], heads.class_offset, -mu_h[k + c:k + c + r],
                                            heads.brand_offset, -mu_h[-1:]])
        self._mu2 = float(heads.mean @ heads.mean)
        start = len(cols)
        for j in range(hm.shape[1]):
            col(lin @ hm[:, j])
        seg = close(head_cols=slice(start, start + hm.shape[1]), c_head=cst @ hm, norm_col=norm_col,
                    norm_dot_cols=norm_dot_cols, norm_known=ends_in_snv, c_final=cst, n_final=lin.shape[1])
        if source == "features" and not ops and not norm_dot_cols and seg.w.dtype == np.float64:
            seg.w_heads_t = np.ascontiguousarray(np.vstack([seg.w[:, seg.head_cols],
                                                            seg.c_head[0] + self._head_offset]).T)
            seg.g = np.vstack([seg.g, np.zeros((1, seg.g.shape[1]))])

    # ------------------------------------------------------------ run
    def run(self, counts: np.ndarray) -> Outputs:
        """Score in blocks of BLOCK_ROWS, so each pass over a block stays in the CPU cache; every block writes
        its rows of the head read-outs into one array, and the read-out runs once over the batch."""
        n = counts.shape[0]
        # One row per read-out (column-major per spectrum): the decision code then works on contiguous columns.
        # Rows 8 values longer than the batch: rows a power of two apart would compete for the same cache sets.
        heads = np.empty((self._head_offset.size, n + 8))[:, :n]
        fnorm2 = np.empty(n)
        degenerate = np.zeros(n, dtype=bool)
        work = np.empty((min(n, BLOCK_ROWS), self.n_bands), dtype=self.dtype)  # reused by every block
        for i in range(0, n, BLOCK_ROWS):
            j = min(i + BLOCK_ROWS, n)
            self._run_block(counts[i:j], work[:j - i], heads[:, i:j].T, fnorm2[i:j], degenerate[i:j])
        return self._read_out(heads, fnorm2, degenerate)

    def _run_block(self, counts: np.ndarray, x: np.ndarray, heads: np.ndarray, fnorm2: np.ndarray,
                   degenerate: np.ndarray) -> None:
        np.copyto(x, counts, casting="unsafe")
        if self._log_counts:
            # Against a whole block of reference rows the subtraction and the floor are one long SIMD loop
            # each; broadcasting one row makes numpy restart its inner loop for every spectrum (twice as slow).
            flat = x.reshape(-1)
            np.subtract(flat, self._dark_rows[:flat.size], out=flat)
            if counts.min() < self._counts_above_floor:
                np.maximum(flat, self._floor_rows[:flat.size], out=flat)
            np.log10(x, out=x)
        for i, seg in enumerate(self.segments):
            if seg.source == "log" and i > 0:
                np.maximum(x, seg.floor, out=x)
                np.log10(x, out=x)
            if seg.w_heads_t is not None:  # written straight into the read-out rows, no transposing pass
                np.matmul(seg.w_heads_t, x.T, out=heads.T)
                fnorm2[:] = np.square(x) @ seg.g[:, seg.norm_col]
                return
            z = x @ seg.w
            sq = np.square(x) @ seg.g if seg.g.shape[1] else None
            if seg.ops:
                z = z.astype(np.float64, copy=False)
                sq = sq.astype(np.float64, copy=False) if sq is not None else None
                a, s = self._scalings(seg, z, sq, degenerate)
            else:  # no scaling step: A is the constant column alone and s is 1
                a = s = None
            if seg.head_cols is None:
                nf = seg.l_out.shape[1]
                y = z[:, z.shape[1] - nf:]
                nxt = self.segments[i + 1]
                if nxt.w_heads_t is not None:  # features and the column of ones, float64
                    x = np.empty((y.shape[0], nf + 1))
                    x[:, nf] = 1.0
                    y_out = x[:, :nf]
                else:
                    y_out = np.empty(y.shape)
                if a is None:
                    np.add(y, seg.c_out[0], out=y_out)  # float64 whatever z is
                else:
                    np.divide(y + a @ seg.c_out, s[:, None], out=y_out)
                if nxt.w_heads_t is None:
                    x = y_out.astype(nxt.w.dtype, copy=False)  # float64 into a narrow features segment
                continue
            hz = z[:, seg.head_cols]
            if a is None:
                np.add(hz, seg.c_head[0] + self._head_offset, out=heads)
            else:
                np.divide(hz + a @ seg.c_head, s[:, None], out=heads)
                heads += self._head_offset
            if seg.norm_known:
                fnorm2[:] = np.where(degenerate, 0.0, float(seg.n_final))
            elif a is None:
                fnorm2[:] = sq[:, seg.norm_col]
                if seg.norm_dot_cols:
                    fnorm2 += 2 * z[:, seg.norm_dot_cols[0]] + float(seg.c_final[0] @ seg.c_final[0])
            else:
                dots = z[:, seg.norm_dot_cols]
                np.divide(sq[:, seg.norm_col] + 2 * _row_dot(a, dots)
                          + _row_dot(a @ (seg.c_final @ seg.c_final.T), a), s * s, out=fnorm2)
            return
        raise AssertionError("compiled chain has no final segment")

    def _scalings(self, seg: _Segment, z: np.ndarray, sq: np.ndarray | None,
                  degenerate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-spectrum offsets A and scales s of the segment's centring, SNV and MSC steps."""
        n = z.shape[0]
        a = np.ones((n, 1))
        s = np.ones(n)
        for op in seg.ops:
            total = (z[:, op.col_sum] + a @ op.c_sum) / s
            mean = total / op.n_bands
            if op.kind == "center":
                a = np.hstack([a, -(s * mean)[:, None]])
            elif op.kind == "snv":
                dots = z[:, op.col_dot]
                ss = sq[:, op.g_col] + 2 * _row_dot(a, dots) + _row_dot(a @ op.c_gram, a)
                var = ss / (s * s) / op.n_bands - mean * mean
                std = np.sqrt(np.maximum(var, 0.0))
                flat = ~(std > 1e-7 * (np.abs(mean) + 1e-30))
                degenerate |= flat
                factor = np.where(flat, 1.0, std)
                a = np.hstack([a, -(s * mean)[:, None]])
                s = s * factor
            else:
                dot = (z[:, op.col_dot[0]] + a @ op.c_ref) / s
                slope = dot / op.rc_norm2
                intercept = mean - slope * op.ref_mean
                bad = ~(np.abs(slope) > 1e-12)
                degenerate |= bad
                a = np.hstack([a, -(s * intercept)[:, None]])
                s = s * np.where(bad, 1.0, slope)
        return a, s

    def _read_out(self, heads, fnorm2, degenerate) -> Outputs:
        """heads (read-outs x spectra) holds (f - mu) @ [components, residual directions, mu] and the logits
        with their offsets."""
        k, c, r, b = self._sizes
        scores = heads[:k].T
        # |f - mu|^2 = |f|^2 - 2 (f - mu).mu - |mu|^2, and Q is what the PCA scores leave of it
        q = fnorm2 - 2 * heads[-1] - self._mu2 - np.ones(k) @ np.square(heads[:k])
        np.maximum(q, 0.0, out=q)
        return Outputs(scores, q, heads[k:k + c].T, heads[k + c:k + c + r].T, heads[k + c + r:k + c + r + b].T,
                       degenerate)


def _band_mixing_follows(steps: list[Step]) -> bool:
    """A linear step that mixes bands comes before the next step that needs diagonal-like L (absorbance, SNV)."""
    for step in steps:
        if step.kind in ("absorbance", "snv"):
            return False
        if step.kind == "linear" and not _diagonal_like(step.matrix):
            return True
    return False


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two (n, k) arrays; a matrix-vector product beats np.sum(axis=1) for small k."""
    return (a * b) @ np.ones(a.shape[1])
