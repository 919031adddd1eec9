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
from libc.math cimport INFINITY, exp, log, log1p
from libc.stdint cimport uint32_t
from libc.stdlib cimport free, malloc

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


def scan(const float[:, ::1] p):
    """Return the NAN(1) / POS_INF(2) / NEG_INF(4) / NEGATIVE(8) bits present in ``p``.

    A helper for ``_validate.check_probs`` (which decides and words the errors).
    """
    cdef Py_ssize_t i, n = p.shape[0] * p.shape[1]
    cdef int flags = 0
    cdef float v
    cdef uint32_t top = 0
    cdef const float* x
    cdef const uint32_t* bits
    if n == 0:
        return 0
    x = &p[0, 0]
    # Fast path: as unsigned ints, exactly the floats in [+0, +inf) lie below 0x7f800000
    # (negatives have the sign bit set, inf/NaN an all-ones exponent); an integer max
    # reduction vectorises, a float one does not without -ffast-math.
    bits = <const uint32_t*>x
    for i in range(n):
        top = bits[i] if bits[i] > top else top
    if top < 0x7f800000u:
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
    return flags


# ------------------------------------------------------------------------------------ greedy

cdef Py_ssize_t _greedy_c(const float* x, Py_ssize_t T, Py_ssize_t C, int blank,
                          int* out) noexcept nogil:
    """Best path into ``out``; returns the number of labels. Lowest index wins ties."""
    cdef Py_ssize_t t, c, n = 0
    cdef int best, prev = -1
    cdef float m
    cdef const float* row
    for t in range(T):
        row = x + t * C
        m = row[0]
        best = 0
        for c in range(1, C):
            if row[c] > m:
                m = row[c]
                best = <int>c
        if best != prev and best != blank:
            out[n] = best
            n += 1
        prev = best
    return n


def greedy(const float[:, ::1] p, int blank, bint is_log):
    """Best path: argmax per frame (lowest index wins ties), merge repeats, drop blanks."""
    cdef Py_ssize_t T = p.shape[0], C = p.shape[1], n, i
    cdef int stackbuf[256]
    cdef int* buf = stackbuf
    if T > 256:
        buf = <int*>malloc(T * sizeof(int))
        if buf == NULL:
            raise MemoryError()
    n = _greedy_c(&p[0, 0], T, C, blank, buf)
    out = [buf[i] for i in range(n)]
    if buf != stackbuf:
        free(buf)
    return out


def greedy_detail(const float[:, ::1] p, int blank, bint is_log):
    """Best path with (labels, per-char confidence, log-probability of the path).

    A character's confidence is the highest probability of its class over the run of frames
    that emitted it; the path's log-probability is the sum of the per-frame maxima's logs.
    """
    cdef Py_ssize_t T = p.shape[0], C = p.shape[1], t, c
    cdef int best, prev = -1
    cdef float m
    cdef double logp = 0.0, conf
    cdef Py_ssize_t nl = 0
    cdef const float* row
    labels = []
    confs = []
    for t in range(T):
        row = &p[t, 0]
        m = row[0]
        best = 0
        for c in range(1, C):
            if row[c] > m:
                m = row[c]
                best = <int>c
        logp += m if is_log else _lg(m)
        if best != blank:
            conf = exp(m) if is_log else m
            if best != prev:
                labels.append(best)
                confs.append(conf)
                nl += 1
            elif conf > confs[nl - 1]:
                confs[nl - 1] = conf
        prev = best
    return labels, confs, logp


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
            counts[i] = _greedy_c(x + i * T * C, T, C, blank, buf + i * T)
    out = [[buf[i * T + j] for j in range(counts[i])] for i in range(N)]
    free(buf)
    free(counts)
    return out


# -------------------------------------------------------------------------------------- beam

cdef inline bint _worse(const double* total, int a, int b) noexcept nogil:
    """Candidate ``a`` ranks below ``b``: lower score, or equal score and created later."""
    return total[a] < total[b] or (total[a] == total[b] and a > b)


cdef void _sift_down(int* heap, int n, int i, const double* total) noexcept nogil:
    """Restore the min-heap (worst candidate at the root) below position ``i``."""
    cdef int l, r, m, tmp
    while True:
        l = 2 * i + 1
        r = l + 1
        m = i
        if l < n and _worse(total, heap[l], heap[m]):
            m = l
        if r < n and _worse(total, heap[r], heap[m]):
            m = r
        if m == i:
            return
        tmp = heap[i]
        heap[i] = heap[m]
        heap[m] = tmp
        i = m


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


cdef int _beam_c(const float* x, int T, int C, int blank, bint is_log, int W, int top_k,
                 const int* classes, int K, int min_len, int max_len, double thr,
                 bint want_conf, int* out_len, int* out_labels, double* out_logp,
                 double* out_conf) noexcept nogil:
    """CTC prefix beam search (see ``_ctc_py.beam``); writes up to ``top_k`` results.

    ``out_labels``/``out_conf`` are (top_k, T) row-major. Returns the number of results, or -1
    when memory runs out.
    """
    cdef Py_ssize_t max_nodes = <Py_ssize_t>T * W + 1
    cdef Py_ssize_t maxc = <Py_ssize_t>W * (K + 1)
    cdef int* n_parent = <int*>malloc(max_nodes * sizeof(int))
    cdef int* n_label = <int*>malloc(max_nodes * sizeof(int))
    cdef int* n_len = <int*>malloc(max_nodes * sizeof(int))
    cdef int* n_child = <int*>malloc(max_nodes * sizeof(int))
    cdef int* n_sibling = <int*>malloc(max_nodes * sizeof(int))
    cdef int* b_node = <int*>malloc(W * sizeof(int))
    cdef int* nb_node = <int*>malloc(W * sizeof(int))
    cdef double* b_pb = <double*>malloc(W * sizeof(double))
    cdef double* b_pnb = <double*>malloc(W * sizeof(double))
    cdef double* nb_pb = <double*>malloc(W * sizeof(double))
    cdef double* nb_pnb = <double*>malloc(W * sizeof(double))
    cdef double* totals = <double*>malloc(W * sizeof(double))
    cdef int* mkeys = <int*>malloc(W * sizeof(int))
    cdef int* heap = <int*>malloc(W * sizeof(int))
    cdef int* order = <int*>malloc(W * sizeof(int))
    cdef int* c_node = <int*>malloc(maxc * sizeof(int))
    cdef int* c_parent = <int*>malloc(maxc * sizeof(int))
    cdef int* c_label = <int*>malloc(maxc * sizeof(int))
    cdef int* c_len = <int*>malloc(maxc * sizeof(int))
    cdef double* c_pb = <double*>malloc(maxc * sizeof(double))
    cdef double* c_pnb = <double*>malloc(maxc * sizeof(double))
    cdef double* c_total = <double*>malloc(maxc * sizeof(double))
    cdef int* merge = <int*>malloc(<Py_ssize_t>W * C * sizeof(int))
    cdef int* e_cls = <int*>malloc((K + 1) * sizeof(int))
    cdef double* e_lp = <double*>malloc((K + 1) * sizeof(double))
    cdef double* lp = NULL
    cdef double* delta = NULL
    cdef double* newd = NULL
    cdef int* back = NULL
    cdef int* tmpi
    cdef double* tmpd
    cdef int result = -1
    cdef int t, i, j, a, c, k, nb, nc, ne, nm, hn, count, node, par, last, length, remaining
    cdef int n_nodes, n_out, pos, max_lab, S
    cdef double zero = NEG_INF if is_log else 0.0
    cdef double lb, v, base
    cdef const float* row
    cdef bint ok

    if (n_parent == NULL or n_label == NULL or n_len == NULL or n_child == NULL
            or n_sibling == NULL or b_node == NULL
            or nb_node == NULL or b_pb == NULL or b_pnb == NULL or nb_pb == NULL
            or nb_pnb == NULL or totals == NULL or mkeys == NULL or heap == NULL
            or order == NULL or c_node == NULL or c_parent == NULL or c_label == NULL
            or c_len == NULL or c_pb == NULL or c_pnb == NULL or c_total == NULL
            or merge == NULL or e_cls == NULL or e_lp == NULL):
        ok = False
    else:
        ok = True

    if ok:
        for i in range(W * C):
            merge[i] = -1
        # Prefix trie: node 0 is the empty prefix; only prefixes that enter the beam get a node.
        n_parent[0] = -1
        n_label[0] = -1
        n_len[0] = 0
        n_child[0] = -1
        n_sibling[0] = -1
        n_nodes = 1
        nb = 1
        b_node[0] = 0
        b_pb[0] = 0.0
        b_pnb[0] = NEG_INF
        for t in range(T):
            row = x + <Py_ssize_t>t * C
            remaining = T - 1 - t
            lb = row[blank] if is_log else _lg(row[blank])
            ne = 0
            for i in range(K):
                c = classes[i]
                if row[c] >= thr and row[c] > zero:
                    e_cls[ne] = c
                    e_lp[ne] = row[c] if is_log else _lg(row[c])
                    ne += 1
            # A beam whose prefix is another beam's prefix + one label receives that extension.
            nm = 0
            for j in range(nb):
                par = n_parent[b_node[j]]
                if par >= 0:
                    for a in range(nb):
                        if b_node[a] == par:
                            mkeys[nm] = a * C + n_label[b_node[j]]
                            merge[mkeys[nm]] = j
                            nm += 1
                            break
            nc = 0
            for j in range(nb):
                totals[j] = _lae(b_pb[j], b_pnb[j])
            for j in range(nb):
                node = b_node[j]
                c_node[nc] = node
                c_parent[nc] = -1
                c_label[nc] = -1
                c_len[nc] = n_len[node]
                c_pb[nc] = totals[j] + lb
                if node != 0:
                    last = n_label[node]
                    c_pnb[nc] = b_pnb[j] + (row[last] if is_log else _lg(row[last]))
                else:
                    c_pnb[nc] = NEG_INF
                nc += 1
            for j in range(nb):
                node = b_node[j]
                length = n_len[node]
                if max_len >= 0 and length >= max_len:
                    continue
                last = n_label[node]
                for i in range(ne):
                    c = e_cls[i]
                    base = b_pb[j] if c == last else totals[j]
                    if base == NEG_INF:
                        continue
                    v = base + e_lp[i]
                    k = merge[j * C + c]
                    if k >= 0:
                        c_pnb[k] = _lae(c_pnb[k], v)
                    else:
                        c_node[nc] = -1
                        c_parent[nc] = node
                        c_label[nc] = c
                        c_len[nc] = length + 1
                        c_pb[nc] = NEG_INF
                        c_pnb[nc] = v
                        nc += 1
            for i in range(nm):
                merge[mkeys[i]] = -1
            # Keep the best W: a min-heap whose root is the worst kept candidate.
            hn = 0
            for i in range(nc):
                c_total[i] = _lae(c_pb[i], c_pnb[i])
                if c_total[i] == NEG_INF or c_len[i] + remaining < min_len:
                    continue
                if hn < W:
                    pos = hn
                    heap[hn] = i
                    hn += 1
                    while pos > 0 and _worse(c_total, heap[pos], heap[(pos - 1) // 2]):
                        a = heap[pos]
                        heap[pos] = heap[(pos - 1) // 2]
                        heap[(pos - 1) // 2] = a
                        pos = (pos - 1) // 2
                elif _worse(c_total, heap[0], i):
                    heap[0] = i
                    _sift_down(heap, hn, 0, c_total)
            count = hn
            for pos in range(count - 1, -1, -1):
                order[pos] = heap[0]
                hn -= 1
                heap[0] = heap[hn]
                _sift_down(heap, hn, 0, c_total)
            for pos in range(count):
                i = order[pos]
                node = c_node[i]
                if node < 0:
                    # One node per distinct prefix, so a prefix that left the beam and comes
                    # back is recognised as the parent of beams extended from it earlier.
                    par = c_parent[i]
                    node = n_child[par]
                    while node >= 0 and n_label[node] != c_label[i]:
                        node = n_sibling[node]
                    if node < 0:
                        node = n_nodes
                        n_parent[node] = par
                        n_label[node] = c_label[i]
                        n_len[node] = c_len[i]
                        n_child[node] = -1
                        n_sibling[node] = n_child[par]
                        n_child[par] = node
                        n_nodes += 1
                nb_node[pos] = node
                nb_pb[pos] = c_pb[i]
                nb_pnb[pos] = c_pnb[i]
            tmpi = b_node
            b_node = nb_node
            nb_node = tmpi
            tmpd = b_pb
            b_pb = nb_pb
            nb_pb = tmpd
            tmpd = b_pnb
            b_pnb = nb_pnb
            nb_pnb = tmpd
            nb = count
            if nb == 0:
                break

        n_out = top_k if top_k < nb else nb
        max_lab = 0
        for j in range(n_out):
            node = b_node[j]
            length = n_len[node]
            out_len[j] = length
            out_logp[j] = _lae(b_pb[j], b_pnb[j])
            if length > max_lab:
                max_lab = length
            pos = length
            while node > 0:
                pos -= 1
                out_labels[<Py_ssize_t>j * T + pos] = n_label[node]
                node = n_parent[node]
        result = n_out
        if want_conf and n_out > 0 and max_lab > 0:
            S = 2 * max_lab + 1
            lp = <double*>malloc(<Py_ssize_t>T * C * sizeof(double))
            delta = <double*>malloc(S * sizeof(double))
            newd = <double*>malloc(S * sizeof(double))
            back = <int*>malloc(<Py_ssize_t>T * S * sizeof(int))
            if lp == NULL or delta == NULL or newd == NULL or back == NULL:
                result = -1
            else:
                for i in range(T * C):
                    lp[i] = x[i] if is_log else _lg(x[i])
                for j in range(n_out):
                    if out_len[j] > 0:
                        _align_c(lp, T, C, out_labels + <Py_ssize_t>j * T, out_len[j], blank,
                                 delta, newd, back, out_conf + <Py_ssize_t>j * T)

    free(n_parent)
    free(n_label)
    free(n_len)
    free(n_child)
    free(n_sibling)
    free(b_node)
    free(nb_node)
    free(b_pb)
    free(b_pnb)
    free(nb_pb)
    free(nb_pnb)
    free(totals)
    free(mkeys)
    free(heap)
    free(order)
    free(c_node)
    free(c_parent)
    free(c_label)
    free(c_len)
    free(c_pb)
    free(c_pnb)
    free(c_total)
    free(merge)
    free(e_cls)
    free(e_lp)
    free(lp)
    free(delta)
    free(newd)
    free(back)
    return result


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
    cdef int K, i, bad = 0
    cdef Py_ssize_t per = <Py_ssize_t>top_k * T
    cdef int* cls = _classes(classes, C, blank, &K)
    cdef int* counts = <int*>malloc(N * sizeof(int))
    cdef int* lens = <int*>malloc(N * top_k * sizeof(int))
    cdef int* labels = <int*>malloc(N * per * sizeof(int))
    cdef double* logp = <double*>malloc(N * top_k * sizeof(double))
    cdef double* conf = <double*>malloc(N * per * sizeof(double)) if want_conf else NULL
    try:
        if (counts == NULL or lens == NULL or labels == NULL or logp == NULL
                or (want_conf and conf == NULL)):
            raise MemoryError()
        with nogil:
            for i in range(N):
                counts[i] = _beam_c(x + <Py_ssize_t>i * T * C, T, C, blank, is_log, beam_width,
                                    top_k, cls, K, min_length, max_length, threshold, want_conf,
                                    lens + i * top_k, labels + i * per, logp + i * top_k,
                                    conf + i * per if want_conf else NULL)
                if counts[i] < 0:
                    bad = 1
                    break
        if bad:
            raise MemoryError()
        return [_results(counts[i], T, lens + i * top_k, labels + i * per, logp + i * top_k,
                         conf + i * per if want_conf else NULL, want_conf) for i in range(N)]
    finally:
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
