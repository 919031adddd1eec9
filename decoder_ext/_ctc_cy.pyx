# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
"""Cython twin of ``_ctc_py.py``; change both together.

Same functions, same signatures, same results (labels, tie-breaking, and scores bit for bit: every
float operation happens in the same order on IEEE doubles, and ``log``/``exp``/``log1p`` are the C
library's, which CPython's ``math`` module calls too). Conventions:

* ``p`` is a validated, C-contiguous float32 ``(T, C)`` array (``(N, T, C)`` for ``*_batch``) of
  probabilities, or of log-probabilities when ``is_log``; the kernels trust it and never raise for
  bad input (``_validate.py`` checked it). ``blank`` is an index in ``[0, C)``.
* Scores are natural-log probabilities in double precision.
* The searches run in ``nogil`` C functions on raw pointers, so the ``*_batch`` entry points
  release the GIL for the whole batch and the caller can split a batch over threads.
"""
cimport numpy as cnp
from libc.math cimport INFINITY, exp, log, log1p
from libc.stdint cimport int32_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cdef extern from "Python.h":
    # CPython's str internals (a str's characters are 1, 2 or 4 bytes wide).
    int PyUnicode_KIND(object s)
    void* PyUnicode_DATA(object s)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t i) nogil
    object PyUnicode_FromKindAndData(int kind, const void* buf, Py_ssize_t size)
    int PyUnicode_4BYTE_KIND

cdef extern from *:
    # Row argmax (first index of the maximum, as the Python twin's ``row.index(max(row))``)
    # for rows without NaN. With SSE2 (every x86-64) the maximum is a packed float max, exact
    # here because there is no NaN, and its first index a packed compare: no branch per value.
    # Elsewhere, ce_argmax is the scalar loop, and ce_argmax_nonneg, for rows whose values all
    # have a clear sign bit, takes the maximum on the bit patterns, which order like the floats
    # then and make a branch-free integer reduction that compilers vectorise without SSE4.1.
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline Py_ssize_t ce_first_eq(const float* row, Py_ssize_t C, float m) {
        Py_ssize_t c = 0;
        __m128 mm = _mm_set1_ps(m);
        for (; c + 4 <= C; c += 4) {
            int mask = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(row + c), mm));
            if (mask) return c + __builtin_ctz(mask);
        }
        while (row[c] != m) c++;
        return c;
    }
    static inline Py_ssize_t ce_argmax(const float* row, Py_ssize_t C) {
        Py_ssize_t c = 0;
        float m = row[0];
        if (C >= 4) {
            __m128 acc = _mm_loadu_ps(row);
            for (c = 4; c + 4 <= C; c += 4) acc = _mm_max_ps(acc, _mm_loadu_ps(row + c));
            acc = _mm_max_ps(acc, _mm_shuffle_ps(acc, acc, _MM_SHUFFLE(2, 3, 0, 1)));
            acc = _mm_max_ps(acc, _mm_shuffle_ps(acc, acc, _MM_SHUFFLE(1, 0, 3, 2)));
            m = _mm_cvtss_f32(acc);
        }
        for (; c < C; c++) if (row[c] > m) m = row[c];
        return ce_first_eq(row, C, m);
    }
    #define ce_argmax_nonneg ce_argmax
    #else
    static inline Py_ssize_t ce_argmax(const float* row, Py_ssize_t C) {
        Py_ssize_t c, best = 0;
        float m = row[0];
        for (c = 1; c < C; c++) if (row[c] > m) { m = row[c]; best = c; }
        return best;
    }
    static inline Py_ssize_t ce_argmax_nonneg(const float* frow, Py_ssize_t C) {
        const int32_t* row = (const int32_t*)frow;
        Py_ssize_t c, best = 0;
        int32_t m = 0, v;  /* every value is >= +0, so m ends equal to one of them */
        for (c = 0; c < C; c++) { v = row[c]; m = v > m ? v : m; }
        while (row[best] != m) best++;
        return best;
    }
    #endif
    """
    Py_ssize_t ce_argmax(const float* row, Py_ssize_t C) noexcept nogil
    Py_ssize_t ce_argmax_nonneg(const float* row, Py_ssize_t C) noexcept nogil

cnp.import_array()

cdef double NEG_INF = -INFINITY


cdef inline double _lae(double a, double b) noexcept nogil:
    """log(exp(a) + exp(b)), exact for -inf operands."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + log1p(exp(b - a))
    return b + log1p(exp(a - b))


cdef inline double _lg(double x) noexcept nogil:
    """Natural log with log(0) = -inf."""
    return log(x) if x > 0.0 else NEG_INF


def scan(probs, Py_ssize_t num_classes):
    """Return the ``_validate`` bits that describe ``probs`` (twin of ``_ctc_py.scan``).

    LAYOUT (32) unless ``probs`` is a non-empty C-contiguous float32 2-D ndarray with
    ``num_classes`` columns (any number when -1); otherwise the bits of the values present:
    NaN (1), +inf (2), -inf (4), negative (8, -inf included) and -0.0 (16). The helper that
    ``_validate`` decides with (it words the errors); it never raises.
    """
    cdef cnp.ndarray p
    cdef Py_ssize_t i, n
    cdef int flags = 0
    cdef float v
    cdef uint32_t top = 0
    cdef const float* x
    cdef const uint32_t* bits
    if type(probs) is not cnp.ndarray:
        return 32
    p = <cnp.ndarray>probs
    if (cnp.PyArray_NDIM(p) != 2 or cnp.PyArray_TYPE(p) != cnp.NPY_FLOAT32
            or not cnp.PyArray_IS_C_CONTIGUOUS(p)):
        return 32
    n = cnp.PyArray_SIZE(p)
    if n == 0 or (num_classes != -1 and cnp.PyArray_DIM(p, 1) != num_classes):
        return 32
    x = <const float*>cnp.PyArray_DATA(p)
    # Fast path on the bit patterns: a float in [+0, +inf) has the sign bit clear and an
    # exponent below all-ones, so neither ``b`` nor ``b + 2**23`` (which carries an all-ones
    # exponent into the sign bit) has the sign bit set. An integer OR-reduction vectorises; a
    # float min/max one does not without -ffast-math.
    bits = <const uint32_t*>x
    for i in range(n):
        top |= bits[i] | (bits[i] + 0x00800000u)
    if not (top & 0x80000000u):
        return 0
    for i in range(n):
        v = x[i]
        if v != v:
            flags |= 1
        elif v == INFINITY:
            flags |= 2
        elif v < 0.0:
            flags |= 8
            if v == -INFINITY:
                flags |= 4
        elif v == 0.0 and bits[i] >> 31:
            flags |= 16
    return flags


# ------------------------------------------------------------------------------------ greedy

cdef Py_ssize_t _greedy_c(const float* x, Py_ssize_t T, Py_ssize_t C, int blank,
                          bint nonneg, int* out) noexcept nogil:
    """Best path into ``out``; returns the number of labels. Lowest index wins ties.
    ``nonneg``: every value has a clear sign bit (see ``ce_argmax_nonneg``)."""
    cdef Py_ssize_t t, n = 0
    cdef int best, prev = -1
    for t in range(T):
        if nonneg:
            best = <int>ce_argmax_nonneg(x + t * C, C)
        else:
            best = <int>ce_argmax(x + t * C, C)
        if best != prev and best != blank:
            out[n] = best
            n += 1
        prev = best
    return n


def greedy(cnp.ndarray p, int blank, bint is_log):
    """Best path: argmax per frame (lowest index wins ties), merge repeats, drop blanks.

    Unlike the other kernels this one takes the (validated, C-contiguous float32) ndarray and
    reads its data pointer: acquiring a typed memoryview costs ~0.25 µs, a sixth of the whole
    1.5 µs budget for a T=50 C=20 greedy decode.
    """
    cdef Py_ssize_t T = cnp.PyArray_DIM(p, 0), C = cnp.PyArray_DIM(p, 1), n, i
    cdef int stackbuf[256]
    cdef int* buf = stackbuf
    if T > 256:
        buf = <int*>malloc(T * sizeof(int))
        if buf == NULL:
            raise MemoryError()
    n = _greedy_c(<const float*>cnp.PyArray_DATA(p), T, C, blank, False, buf)
    out = [buf[i] for i in range(n)]
    if buf != stackbuf:
        free(buf)
    return out


def greedy_text(cnp.ndarray p, int blank, tuple symbols):
    """:func:`greedy`, joined into text with ``symbols`` (one str per class)."""
    return "".join([symbols[i] for i in greedy(p, blank, False)])


def greedy_chars(cnp.ndarray p, str alphabet):
    """:func:`greedy_text` for the blank last and ``alphabet`` a str of ``C - 1`` symbols.

    ``decode_greedy``'s fast path, for input that ``_validate.greedy_fast`` accepted: every
    value in ``[+0, +inf)`` (``ce_argmax_nonneg`` relies on it). The text is built from the
    alphabet's characters in the kernel.
    """
    cdef Py_ssize_t T = cnp.PyArray_DIM(p, 0), C = cnp.PyArray_DIM(p, 1), n, i
    cdef int stackbuf[256]
    cdef Py_UCS4 chars[256]
    cdef int* buf = stackbuf
    cdef Py_UCS4* text = chars
    cdef int kind = PyUnicode_KIND(alphabet)
    cdef void* data = PyUnicode_DATA(alphabet)
    if T > 256:
        buf = <int*>malloc(T * (sizeof(int) + sizeof(Py_UCS4)))
        if buf == NULL:
            raise MemoryError()
        text = <Py_UCS4*>(buf + T)
    n = _greedy_c(<const float*>cnp.PyArray_DATA(p), T, C, <int>(C - 1), True, buf)
    for i in range(n):
        text[i] = PyUnicode_READ(kind, data, buf[i])
    try:
        return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, text, n)
    finally:
        if buf != stackbuf:
            free(buf)


cdef Py_ssize_t _greedy_detail_c(const float* x, Py_ssize_t T, Py_ssize_t C, int blank,
                                 bint is_log, int* labels, double* confs,
                                 double* logp) noexcept nogil:
    """Best path into ``labels``/``confs`` and its log-probability into ``logp[0]``; returns
    the number of labels (see :func:`greedy_detail`)."""
    cdef Py_ssize_t t, n = 0
    cdef int best, prev = -1
    cdef float m
    cdef double lp = 0.0, conf
    cdef const float* row
    for t in range(T):
        row = x + t * C
        best = <int>ce_argmax(row, C)
        m = row[best]
        lp += m if is_log else _lg(m)
        if best != blank:
            conf = exp(m) if is_log else m
            if best != prev:
                labels[n] = best
                confs[n] = conf
                n += 1
            elif conf > confs[n - 1]:
                confs[n - 1] = conf
        prev = best
    logp[0] = lp
    return n


cdef list _details(const float* x, Py_ssize_t N, Py_ssize_t T, Py_ssize_t C, int blank,
                   bint is_log):
    """:func:`_greedy_detail_c` on N consecutive (T, C) matrices without the GIL."""
    cdef Py_ssize_t i, j
    cdef int* labels = <int*>malloc(N * T * sizeof(int))
    cdef double* confs = <double*>malloc(N * T * sizeof(double))
    cdef double* logp = <double*>malloc(N * sizeof(double))
    cdef Py_ssize_t* counts = <Py_ssize_t*>malloc(N * sizeof(Py_ssize_t))
    try:
        if labels == NULL or confs == NULL or logp == NULL or counts == NULL:
            raise MemoryError()
        with nogil:
            for i in range(N):
                counts[i] = _greedy_detail_c(x + i * T * C, T, C, blank, is_log,
                                             labels + i * T, confs + i * T, logp + i)
        return [([labels[i * T + j] for j in range(counts[i])],
                 [confs[i * T + j] for j in range(counts[i])], logp[i]) for i in range(N)]
    finally:
        free(labels)
        free(confs)
        free(logp)
        free(counts)


def greedy_detail(const float[:, ::1] p, int blank, bint is_log):
    """Best path with (labels, per-char confidence, log-probability of the path).

    A character's confidence is the highest probability of its class over the run of frames
    that emitted it; the path's log-probability is the sum of the per-frame maxima's logs.
    """
    return _details(&p[0, 0], 1, p.shape[0], p.shape[1], blank, is_log)[0]


def greedy_detail_batch(const float[:, :, ::1] p, int blank, bint is_log):
    """:func:`greedy_detail` over the first axis of an ``(N, T, C)`` array; no GIL while
    decoding."""
    if p.shape[0] == 0:
        return []
    return _details(&p[0, 0, 0], p.shape[0], p.shape[1], p.shape[2], blank, is_log)


def greedy_batch(const float[:, :, ::1] p, int blank, bint is_log):
    """:func:`greedy` over the first axis of an ``(N, T, C)`` array; no GIL while decoding."""
    cdef Py_ssize_t N = p.shape[0], T = p.shape[1], C = p.shape[2], i, j
    cdef int* buf
    cdef Py_ssize_t* counts
    if N == 0:
        return []
    buf = <int*>malloc(N * T * sizeof(int))
    counts = <Py_ssize_t*>malloc(N * sizeof(Py_ssize_t))
    if buf == NULL or counts == NULL:
        free(buf)
        free(counts)
        raise MemoryError()
    cdef const float* x = &p[0, 0, 0]
    with nogil:
        for i in range(N):
            counts[i] = _greedy_c(x + i * T * C, T, C, blank, False, buf + i * T)
    out = [[buf[i * T + j] for j in range(counts[i])] for i in range(N)]
    free(buf)
    free(counts)
    return out


# -------------------------------------------------------------------------------------- beam

cdef struct Work:
    # Prefix trie, one node per distinct prefix that ever entered the beam (<= T * W + 1).
    int* n_parent
    int* n_label
    int* n_len
    int* n_child
    int* n_sibling
    int* n_beam      # node -> index of the current beam holding it, or -1
    # Current beams and the next ones: node, log P(ends in blank), log P(ends in label), total.
    int* b_node
    double* b_pb
    double* b_pnb
    double* b_tot
    int* nb_node
    double* nb_pb
    double* nb_pnb
    double* nb_tot
    int* pa          # per beam: index of the beam holding its prefix minus the last label
    # Candidate slots of the selection heap (W of them) and the heap itself.
    int* s_node
    int* s_parent
    int* s_label
    int* s_len
    int* s_idx
    double* s_pb
    double* s_pnb
    double* s_tot
    int* heap
    int* order
    int* merge       # (W, C): beam a + label c -> beam index, or -1
    int* mkeys
    int* e_cls       # classes that extend prefixes at this frame, and their log-probs
    double* e_lp
    double* lrow     # per-frame log-prob cache (probability input), valid where stamp == t
    int* lstamp
    int* kstamp      # kstamp[c] == t: class c extends prefixes at frame t
    # Confidences: (T, C) log table and the Viterbi buffers.
    double* lp
    double* delta
    double* newd
    int* back        # (T, 2L + 1) Viterbi back-pointers, grown to the longest result
    Py_ssize_t back_cap


cdef void _work_free(Work* w) noexcept nogil:
    """Free every buffer of ``w`` (NULL-safe)."""
    free(w.n_parent); free(w.n_label); free(w.n_len); free(w.n_child); free(w.n_sibling)
    free(w.n_beam)
    free(w.b_node); free(w.b_pb); free(w.b_pnb); free(w.b_tot)
    free(w.nb_node); free(w.nb_pb); free(w.nb_pnb); free(w.nb_tot); free(w.pa)
    free(w.s_node); free(w.s_parent); free(w.s_label); free(w.s_len); free(w.s_idx)
    free(w.s_pb); free(w.s_pnb); free(w.s_tot); free(w.heap); free(w.order)
    free(w.merge); free(w.mkeys); free(w.e_cls); free(w.e_lp)
    free(w.lrow); free(w.lstamp); free(w.kstamp)
    free(w.lp); free(w.delta); free(w.newd); free(w.back)


cdef int _work_alloc(Work* w, int T, int C, int W, bint want_conf) noexcept nogil:
    """Allocate ``w`` for (T, C) inputs and beam width W; 0 on success, -1 out of memory."""
    cdef Py_ssize_t nodes = <Py_ssize_t>T * W + 1, i
    cdef Py_ssize_t S = 2 * <Py_ssize_t>T + 1
    memset(w, 0, sizeof(Work))
    w.n_parent = <int*>malloc(nodes * sizeof(int))
    w.n_label = <int*>malloc(nodes * sizeof(int))
    w.n_len = <int*>malloc(nodes * sizeof(int))
    w.n_child = <int*>malloc(nodes * sizeof(int))
    w.n_sibling = <int*>malloc(nodes * sizeof(int))
    w.n_beam = <int*>malloc(nodes * sizeof(int))
    w.b_node = <int*>malloc(W * sizeof(int))
    w.b_pb = <double*>malloc(W * sizeof(double))
    w.b_pnb = <double*>malloc(W * sizeof(double))
    w.b_tot = <double*>malloc(W * sizeof(double))
    w.nb_node = <int*>malloc(W * sizeof(int))
    w.nb_pb = <double*>malloc(W * sizeof(double))
    w.nb_pnb = <double*>malloc(W * sizeof(double))
    w.nb_tot = <double*>malloc(W * sizeof(double))
    w.pa = <int*>malloc(W * sizeof(int))
    w.s_node = <int*>malloc(W * sizeof(int))
    w.s_parent = <int*>malloc(W * sizeof(int))
    w.s_label = <int*>malloc(W * sizeof(int))
    w.s_len = <int*>malloc(W * sizeof(int))
    w.s_idx = <int*>malloc(W * sizeof(int))
    w.s_pb = <double*>malloc(W * sizeof(double))
    w.s_pnb = <double*>malloc(W * sizeof(double))
    w.s_tot = <double*>malloc(W * sizeof(double))
    w.heap = <int*>malloc(W * sizeof(int))
    w.order = <int*>malloc(W * sizeof(int))
    w.merge = <int*>malloc(<Py_ssize_t>W * C * sizeof(int))
    w.mkeys = <int*>malloc(W * sizeof(int))
    w.e_cls = <int*>malloc(C * sizeof(int))
    w.e_lp = <double*>malloc(C * sizeof(double))
    w.lrow = <double*>malloc(C * sizeof(double))
    w.lstamp = <int*>malloc(C * sizeof(int))
    w.kstamp = <int*>malloc(C * sizeof(int))
    if want_conf:
        w.lp = <double*>malloc(<Py_ssize_t>T * C * sizeof(double))
        w.delta = <double*>malloc(S * sizeof(double))
        w.newd = <double*>malloc(S * sizeof(double))
    if (w.n_parent == NULL or w.n_label == NULL or w.n_len == NULL or w.n_child == NULL
            or w.n_sibling == NULL or w.n_beam == NULL or w.b_node == NULL or w.b_pb == NULL or w.b_pnb == NULL
            or w.b_tot == NULL or w.nb_node == NULL or w.nb_pb == NULL or w.nb_pnb == NULL
            or w.nb_tot == NULL or w.pa == NULL or w.s_node == NULL or w.s_parent == NULL
            or w.s_label == NULL or w.s_len == NULL or w.s_idx == NULL or w.s_pb == NULL
            or w.s_pnb == NULL or w.s_tot == NULL or w.heap == NULL or w.order == NULL
            or w.merge == NULL or w.mkeys == NULL or w.e_cls == NULL or w.e_lp == NULL
            or w.lrow == NULL or w.lstamp == NULL or w.kstamp == NULL
            or (want_conf and (w.lp == NULL or w.delta == NULL or w.newd == NULL))):
        _work_free(w)
        memset(w, 0, sizeof(Work))
        return -1
    for i in range(<Py_ssize_t>W * C):
        w.merge[i] = -1
    for i in range(nodes):
        w.n_beam[i] = -1
    return 0


cdef inline bint _worse(const Work* w, int a, int b) noexcept nogil:
    """Slot ``a`` ranks below slot ``b``: lower score, or equal score and created later."""
    return w.s_tot[a] < w.s_tot[b] or (w.s_tot[a] == w.s_tot[b] and w.s_idx[a] > w.s_idx[b])


cdef void _sift_down(Work* w, int n, int i) noexcept nogil:
    """Restore the min-heap (worst candidate at the root) below position ``i``."""
    cdef int l, r, m, tmp
    cdef int* heap = w.heap
    while True:
        l = 2 * i + 1
        r = l + 1
        m = i
        if l < n and _worse(w, heap[l], heap[m]):
            m = l
        if r < n and _worse(w, heap[r], heap[m]):
            m = r
        if m == i:
            return
        tmp = heap[i]
        heap[i] = heap[m]
        heap[m] = tmp
        i = m


cdef inline int _offer(Work* w, int hn, int W, int idx, int node, int parent, int label,
                       int length, double pb, double pnb, double tot) noexcept nogil:
    """Offer a candidate to the selection heap (size ``hn``); returns the new size."""
    cdef int slot, pos, up, tmp
    if hn < W:
        slot = hn
        w.heap[hn] = slot
        pos = hn
        hn += 1
    else:
        slot = w.heap[0]
        # Candidates arrive in creation order, so an equal score loses to the kept one.
        if not tot > w.s_tot[slot]:
            return hn
        pos = -1
    w.s_node[slot] = node
    w.s_parent[slot] = parent
    w.s_label[slot] = label
    w.s_len[slot] = length
    w.s_idx[slot] = idx
    w.s_pb[slot] = pb
    w.s_pnb[slot] = pnb
    w.s_tot[slot] = tot
    if pos < 0:
        _sift_down(w, hn, 0)
    else:
        while pos > 0:
            up = (pos - 1) // 2
            if not _worse(w, w.heap[pos], w.heap[up]):
                break
            tmp = w.heap[pos]
            w.heap[pos] = w.heap[up]
            w.heap[up] = tmp
            pos = up
    return hn


cdef void _align_c(const double* lp, int T, int C, const int* labels, int n, int blank,
                   double* delta, double* newd, int* back, double* out) noexcept nogil:
    """Per-char confidence from the most probable alignment (Viterbi) of ``labels``.

    ``lp`` is the (T, C) log-probability table; ``out[j]`` gets the highest probability of
    label j's class over the frames that alignment assigns to it.
    """
    cdef int S = 2 * n + 1, s, t, arg, es
    cdef double best, v
    cdef double* tmp
    cdef const double* row
    for s in range(S):
        delta[s] = NEG_INF
    delta[0] = lp[blank]
    delta[1] = lp[labels[0]]
    for t in range(1, T):
        row = lp + t * C
        for s in range(S):
            es = blank if s % 2 == 0 else labels[s // 2]
            best = delta[s]
            arg = s
            if s >= 1 and delta[s - 1] > best:
                best = delta[s - 1]
                arg = s - 1
            if (s >= 2 and es != blank and es != labels[s // 2 - 1]
                    and delta[s - 2] > best):
                best = delta[s - 2]
                arg = s - 2
            newd[s] = best + row[es]
            back[t * S + s] = arg
        tmp = delta
        delta = newd
        newd = tmp
    s = S - 1 if delta[S - 1] >= delta[S - 2] else S - 2
    for t in range(n):
        out[t] = NEG_INF
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            v = lp[t * C + labels[s // 2]]
            if v > out[s // 2]:
                out[s // 2] = v
        if t > 0:
            s = back[t * S + s]
    for t in range(n):
        out[t] = exp(out[t])


cdef inline double _lpc(Work* w, const float* row, int c, int t, bint is_log) noexcept nogil:
    """log P(class c) at this frame, computed once per frame for probability input."""
    if is_log:
        return row[c]
    if w.lstamp[c] != t:
        w.lrow[c] = _lg(row[c])
        w.lstamp[c] = t
    return w.lrow[c]


cdef int _beam_c(Work* w, const float* x, int T, int C, int blank, bint is_log, int W,
                 int top_k, const int* classes, int K, int min_len, int max_len, double thr,
                 bint want_conf, int* out_len, int* out_labels, double* out_logp,
                 double* out_conf) noexcept nogil:
    """CTC prefix beam search (see ``_ctc_py.beam``); writes up to ``top_k`` results.

    Same candidates, scores and ranking as the Python twin, computed leaner: a beam's
    total is carried over from the selection, merged extensions (beam a + label == beam j)
    are added to j's stay-candidate up front so every score is final when it is offered, and
    a size-W heap keeps the best candidates without storing the rest. ``out_labels`` and
    ``out_conf`` are (top_k, T) row-major. Returns the number of results, or -1 when memory
    runs out.
    """
    cdef int t, i, j, a, c, nb, ne, nm, hn, count, node, par, last, length, remaining
    cdef int idx, n_nodes, n_out, pos, slot, max_lab
    cdef Py_ssize_t need
    cdef double zero = NEG_INF if is_log else 0.0
    cdef double lb, v, base, pb, pnb, tot
    cdef const float* row

    for c in range(C):
        w.lstamp[c] = -1
        w.kstamp[c] = -1
    w.n_parent[0] = -1
    w.n_label[0] = -1
    w.n_len[0] = 0
    w.n_child[0] = -1
    w.n_sibling[0] = -1
    n_nodes = 1
    nb = 1
    w.b_node[0] = 0
    w.b_pb[0] = 0.0
    w.b_pnb[0] = NEG_INF
    w.b_tot[0] = 0.0
    for t in range(T):
        row = x + <Py_ssize_t>t * C
        remaining = T - 1 - t
        lb = _lpc(w, row, blank, t, is_log)
        ne = 0
        for i in range(K):
            c = classes[i]
            if row[c] >= thr and row[c] > zero:
                w.e_cls[ne] = c
                w.e_lp[ne] = _lpc(w, row, c, t, is_log)
                w.kstamp[c] = t
                ne += 1
        # A beam whose prefix is another beam's prefix + one label receives that extension.
        for j in range(nb):
            w.n_beam[w.b_node[j]] = j
        nm = 0
        for j in range(nb):
            par = w.n_parent[w.b_node[j]]
            a = w.n_beam[par] if par >= 0 else -1
            w.pa[j] = a
            if a >= 0:
                w.mkeys[nm] = a * C + w.n_label[w.b_node[j]]
                w.merge[w.mkeys[nm]] = j
                nm += 1
        for j in range(nb):
            w.n_beam[w.b_node[j]] = -1
        # Stay-candidates (creation index j), with the merged extension already added.
        hn = 0
        for j in range(nb):
            node = w.b_node[j]
            pb = w.b_tot[j] + lb
            if node != 0:
                last = w.n_label[node]
                pnb = w.b_pnb[j] + _lpc(w, row, last, t, is_log)
                a = w.pa[j]
                if a >= 0 and w.kstamp[last] == t:
                    base = w.b_pb[a] if last == w.n_label[w.b_node[a]] else w.b_tot[a]
                    if base != NEG_INF:
                        pnb = _lae(pnb, base + _lpc(w, row, last, t, is_log))
            else:
                pnb = NEG_INF
            tot = _lae(pb, pnb)
            if tot != NEG_INF and w.n_len[node] + remaining >= min_len:
                hn = _offer(w, hn, W, j, node, -1, -1, w.n_len[node], pb, pnb, tot)
        # Extension candidates (creation index nb, nb + 1, ... by beam, then class).
        idx = nb
        for j in range(nb):
            node = w.b_node[j]
            length = w.n_len[node]
            if max_len >= 0 and length >= max_len:
                continue
            if length + 1 + remaining < min_len:
                continue
            last = w.n_label[node]
            for i in range(ne):
                c = w.e_cls[i]
                base = w.b_pb[j] if c == last else w.b_tot[j]
                if base == NEG_INF or w.merge[j * C + c] >= 0:
                    continue
                v = base + w.e_lp[i]
                hn = _offer(w, hn, W, idx, -1, node, c, length + 1, NEG_INF, v, v)
                idx += 1
        for i in range(nm):
            w.merge[w.mkeys[i]] = -1
        # Heap -> best-first order.
        count = hn
        for pos in range(count - 1, -1, -1):
            w.order[pos] = w.heap[0]
            hn -= 1
            w.heap[0] = w.heap[hn]
            _sift_down(w, hn, 0)
        for pos in range(count):
            slot = w.order[pos]
            node = w.s_node[slot]
            if node < 0:
                # One node per distinct prefix, so a prefix that left the beam and comes
                # back is recognised as the parent of beams extended from it earlier.
                par = w.s_parent[slot]
                node = w.n_child[par]
                while node >= 0 and w.n_label[node] != w.s_label[slot]:
                    node = w.n_sibling[node]
                if node < 0:
                    node = n_nodes
                    w.n_parent[node] = par
                    w.n_label[node] = w.s_label[slot]
                    w.n_len[node] = w.s_len[slot]
                    w.n_child[node] = -1
                    w.n_sibling[node] = w.n_child[par]
                    w.n_child[par] = node
                    n_nodes += 1
            w.nb_node[pos] = node
            w.nb_pb[pos] = w.s_pb[slot]
            w.nb_pnb[pos] = w.s_pnb[slot]
            w.nb_tot[pos] = w.s_tot[slot]
        w.b_node, w.nb_node = w.nb_node, w.b_node
        w.b_pb, w.nb_pb = w.nb_pb, w.b_pb
        w.b_pnb, w.nb_pnb = w.nb_pnb, w.b_pnb
        w.b_tot, w.nb_tot = w.nb_tot, w.b_tot
        nb = count
        if nb == 0:
            break

    n_out = top_k if top_k < nb else nb
    max_lab = 0
    for j in range(n_out):
        node = w.b_node[j]
        length = w.n_len[node]
        out_len[j] = length
        out_logp[j] = w.b_tot[j]
        if length > max_lab:
            max_lab = length
        pos = length
        while node > 0:
            pos -= 1
            out_labels[<Py_ssize_t>j * T + pos] = w.n_label[node]
            node = w.n_parent[node]
    if want_conf and max_lab > 0:
        need = <Py_ssize_t>T * (2 * max_lab + 1)
        if need > w.back_cap:
            free(w.back)
            w.back = <int*>malloc(need * sizeof(int))
            w.back_cap = need if w.back != NULL else 0
            if w.back == NULL:
                return -1
        for i in range(T * C):
            w.lp[i] = x[i] if is_log else _lg(x[i])
        for j in range(n_out):
            if out_len[j] > 0:
                _align_c(w.lp, T, C, out_labels + <Py_ssize_t>j * T, out_len[j], blank,
                         w.delta, w.newd, w.back, out_conf + <Py_ssize_t>j * T)
    return n_out


cdef int* _classes(classes, int C, int blank, int* K) except NULL:
    """Malloc'd array of the non-blank classes that may be emitted (``None``: all)."""
    cdef int i, n
    cdef int* out
    if classes is None:
        out = <int*>malloc(C * sizeof(int))
        if out == NULL:
            raise MemoryError()
        n = 0
        for i in range(C):
            if i != blank:
                out[n] = i
                n += 1
    else:
        n = len(classes)
        out = <int*>malloc((n + 1) * sizeof(int))
        if out == NULL:
            raise MemoryError()
        for i in range(n):
            out[i] = classes[i]
    K[0] = n
    return out


cdef list _results(int n, int T, const int* lens, const int* labels, const double* logp,
                   const double* conf, bint want_conf):
    """C result buffers -> list of (labels, log_prob, confidences or None)."""
    cdef int j, i
    out = []
    for j in range(n):
        out.append((
            [labels[<Py_ssize_t>j * T + i] for i in range(lens[j])],
            logp[j],
            [conf[<Py_ssize_t>j * T + i] for i in range(lens[j])] if want_conf else None,
        ))
    return out


cdef list _beam_run(const float* x, int N, int T, int C, int blank, bint is_log,
                    int beam_width, int top_k, classes, int min_length, int max_length,
                    double threshold, bint want_conf):
    """Run :func:`_beam_c` on N consecutive (T, C) matrices without the GIL."""
    cdef int K = 0, i
    cdef Py_ssize_t per = <Py_ssize_t>top_k * T
    cdef Work work
    cdef int* cls = _classes(classes, C, blank, &K)
    cdef int* counts = <int*>malloc(N * sizeof(int))
    cdef int* lens = <int*>malloc(N * top_k * sizeof(int))
    cdef int* labels = <int*>malloc(N * per * sizeof(int))
    cdef double* logp = <double*>malloc(N * top_k * sizeof(double))
    cdef double* conf = <double*>malloc(N * per * sizeof(double)) if want_conf else NULL
    cdef int bad = _work_alloc(&work, T, C, beam_width, want_conf)
    try:
        if (bad or counts == NULL or lens == NULL or labels == NULL or logp == NULL
                or (want_conf and conf == NULL)):
            raise MemoryError()
        with nogil:
            for i in range(N):
                counts[i] = _beam_c(&work, x + <Py_ssize_t>i * T * C, T, C, blank, is_log,
                                    beam_width, top_k, cls, K, min_length, max_length,
                                    threshold, want_conf, lens + i * top_k, labels + i * per,
                                    logp + i * top_k, conf + i * per if want_conf else NULL)
                if counts[i] < 0:
                    bad = 1
                    break
        if bad:
            raise MemoryError()
        return [_results(counts[i], T, lens + i * top_k, labels + i * per, logp + i * top_k,
                         conf + i * per if want_conf else NULL, want_conf) for i in range(N)]
    finally:
        _work_free(&work)
        free(cls)
        free(counts)
        free(lens)
        free(labels)
        free(logp)
        free(conf)


def beam(const float[:, ::1] p, int blank, bint is_log, int beam_width, int top_k, classes,
         int min_length, int max_length, double threshold, bint want_conf):
    """CTC prefix beam search in log space; returns up to ``top_k`` (labels, log_prob, confs).

    See ``_ctc_py.beam`` for the algorithm and conventions.
    """
    return _beam_run(&p[0, 0], 1, <int>p.shape[0], <int>p.shape[1], blank, is_log, beam_width,
                     top_k, classes, min_length, max_length, threshold, want_conf)[0]


def beam_batch(const float[:, :, ::1] p, int blank, bint is_log, int beam_width, int top_k,
               classes, int min_length, int max_length, double threshold, bint want_conf):
    """:func:`beam` over the first axis of an ``(N, T, C)`` array; no GIL while searching."""
    if p.shape[0] == 0:
        return []
    return _beam_run(&p[0, 0, 0], <int>p.shape[0], <int>p.shape[1], <int>p.shape[2], blank,
                     is_log, beam_width, top_k, classes, min_length, max_length, threshold,
                     want_conf)
